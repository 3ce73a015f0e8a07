// The zs::Error family and the two check macros.
//
// ZS_CHECK(cond, ...) raises a zs::Error subclass for invalid *input* (files, configs, requests,
// flags, shapes handed to an op): the message names the thing, the value got and the value
// expected, and carries file:line. ZS_ASSERT(cond, ...) is for broken internal invariants: it
// prints file:line and aborts, in every build. Hot paths never throw; "no room" is a value
// (std::optional / bool).
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>

#include <fmt/format.h>

namespace zs {

// Base of every error zerospeed raises for bad input. what() is the full message; where() is
// file:line.
class Error : public std::runtime_error {
public:
    Error(std::string msg, std::string where = {})
        : std::runtime_error(std::move(msg)), where_(std::move(where)) {}
    const std::string& where() const { return where_; }

private:
    std::string where_;
};

class ConfigError : public Error {  // ds_config.json, config.json, CLI flags
    using Error::Error;
};
class IoError : public Error {  // files: missing, truncated, malformed, corrupt
    using Error::Error;
};
class ShapeError : public Error {  // tensor shape/dtype/device mismatches at an op's boundary
    using Error::Error;
};
class CommError : public Error {  // collectives: timeouts, missing ranks, transport failures
    using Error::Error;
};
class NotSupported : public Error {  // a valid request this build/backend cannot serve
    using Error::Error;
};
// A bad value of one named field of a request (a sampling or generation option): the server
// answers it with that field as OpenAI's `param`, without reading it out of the message.
class FieldError : public ConfigError {
public:
    FieldError(std::string field, std::string msg, std::string where = {})
        : ConfigError(std::move(msg), std::move(where)), field_(std::move(field)) {}
    const std::string& field() const { return field_; }

private:
    std::string field_;
};

namespace detail {

[[noreturn]] void assert_fail(const char* file, int line, const char* cond, const std::string& msg);

template <class E>
[[noreturn]] void raise(const char* file, int line, std::string msg) {
    std::string where = fmt::format("{}:{}", file, line);
    throw E(std::move(msg), std::move(where));
}

inline std::string format_or_empty() { return {}; }
template <class... Args>
std::string format_or_empty(fmt::format_string<Args...> f, Args&&... args) {
    return fmt::format(f, std::forward<Args>(args)...);
}

}  // namespace detail
}  // namespace zs

// Raise `ErrType` (a zs::Error subclass) with a fmt::format message unless `cond` holds.
#define ZS_CHECK_T(ErrType, cond, ...)                                                \
    do {                                                                              \
        if (!(cond)) [[unlikely]] {                                                   \
            ::zs::detail::raise<ErrType>(__FILE__, __LINE__,                          \
                                         ::zs::detail::format_or_empty(__VA_ARGS__)); \
        }                                                                             \
    } while (0)

#define ZS_CHECK(cond, ...) ZS_CHECK_T(::zs::Error, cond, __VA_ARGS__)

// Raise FieldError naming request field `field` unless `cond` holds.
#define ZS_CHECK_FIELD(cond, field, ...)                                              \
    do {                                                                              \
        if (!(cond)) [[unlikely]] {                                                   \
            throw ::zs::FieldError(field, ::zs::detail::format_or_empty(__VA_ARGS__), \
                                   fmt::format("{}:{}", __FILE__, __LINE__));         \
        }                                                                             \
    } while (0)

// Raise unconditionally.
#define ZS_THROW(ErrType, ...) \
    ::zs::detail::raise<ErrType>(__FILE__, __LINE__, ::zs::detail::format_or_empty(__VA_ARGS__))

// Abort with file:line when an internal invariant is broken. On in every build.
#define ZS_ASSERT(cond, ...)                                                       \
    do {                                                                           \
        if (!(cond)) [[unlikely]] {                                                \
            ::zs::detail::assert_fail(__FILE__, __LINE__, #cond,                   \
                                      ::zs::detail::format_or_empty(__VA_ARGS__)); \
        }                                                                          \
    } while (0)
