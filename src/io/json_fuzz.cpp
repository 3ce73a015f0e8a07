// libFuzzer target: parse arbitrary bytes with load_json's parser and limits, then read every
// key of every object (to a bounded depth) through each JsonReader getter. Only zs::Error may
// escape; anything else is a bug.
#include <cstdint>
#include <string_view>

#include "base/error.h"
#include "io/json.h"

namespace {

void read_all(const zs::io::JsonReader& r, int depth) {
    for (const std::string& k : r.keys()) {
        auto attempt = [](auto&& fn) {
            try {
                fn();
            } catch (const zs::Error&) {
            }
        };
        attempt([&] { r.get_string(k); });
        attempt([&] { r.get_int(k, -1000, 1000); });
        attempt([&] { r.opt_int(k); });
        attempt([&] { r.get_number(k); });
        attempt([&] { r.opt_bool(k); });
        attempt([&] { r.get_string_array(k); });
        attempt([&] { r.get_int_array(k); });
        attempt([&] { r.get_number_array(k); });
        if (depth < 4) {
            attempt([&] { read_all(r.get_object(k), depth + 1); });
            attempt([&] {
                for (const zs::io::JsonReader& e : r.get_object_array(k)) read_all(e, depth + 1);
            });
        }
    }
    (void)r.unknown_keys({"a", "b"});
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    zs::io::JsonLimits limits;
    limits.max_bytes = 1 << 20;
    limits.max_depth = 32;
    try {
        nlohmann::json j = zs::io::parse_json(
            std::string_view(reinterpret_cast<const char*>(data), size), "fuzz.json", limits);
        if (j.is_object()) read_all(zs::io::JsonReader(j, "fuzz.json"), 0);
    } catch (const zs::Error&) {
    }
    return 0;
}
