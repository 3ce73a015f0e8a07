// http: the event-driven HTTP/1.1 layer under the OpenAI server (Boost.Beast over Boost.Asio).
//
// One I/O thread multiplexes every connection with epoll; a connection costs a socket and a few
// kilobytes, not a thread. A request must arrive whole — head and body — within
// `request_timeout_s` of when the server starts waiting for it (a whole-request deadline, not a
// per-read one), so a client trickling one byte a second is answered 408 and closed when the
// deadline passes, and a thousand of them cost the other clients nothing. Handlers run on the I/O
// thread and must not block there: work that waits (generation) is posted to the worker pool with
// `Server::post_work`, and answered from there.
//
//   accept ─▶ read (deadline) ─▶ route ─▶ handler(Exchange) ─▶ respond / stream ─▶ next request
//
// Errors the layer itself finds (malformed HTTP 400, deadline 408, body too large 413, no route
// 404, wrong method 405) are answered with the body `Options::error_body` builds, so the server
// above gives them OpenAI's error shape.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace zs::serve::http {

struct Request {
    std::string method;  // "GET", "POST", ...
    std::string path;    // the target without its query
    std::string query;
    int version = 11;                                          // 10 or 11
    std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased
    std::string body;
    // The value of header `name` (lower-case), "" when absent.
    std::string header(std::string_view name) const;
};

struct Response {
    int status = 200;
    std::string content_type = "application/json";
    std::string body;
    std::vector<std::pair<std::string, std::string>> headers;
};

class Session;

// One request and its answer. Answer exactly once: respond(), or begin_stream() ... end_stream().
// An exchange dropped unanswered is answered 500. Thread-safe; the stream calls block (call them
// from a worker, never from a handler on the I/O thread).
class Exchange {
public:
    Exchange(std::shared_ptr<Session> s, Request r);
    ~Exchange();
    Exchange(const Exchange&) = delete;
    Exchange& operator=(const Exchange&) = delete;

    const Request& request() const { return req_; }
    void respond(Response r);
    // Send the head: chunked under HTTP/1.1; under HTTP/1.0 (no chunked encoding) the body runs
    // to the closed connection. Returns false when the client is gone.
    bool begin_stream(int status, const std::string& content_type,
                      std::vector<std::pair<std::string, std::string>> headers);
    // One piece of the body; false once the client is gone or the write timed out.
    bool write(std::string data);
    void end_stream();

private:
    std::shared_ptr<Session> session_;
    Request req_;
    bool answered_ = false;
    bool streaming_ = false;
};
using ExchangePtr = std::shared_ptr<Exchange>;
using Handler = std::function<void(const ExchangePtr&)>;

struct Options {
    std::string host = "127.0.0.1";
    int port = 0;                   // 0: any free port
    double request_timeout_s = 10;  // whole request (head + body), and idle keep-alive
    double write_timeout_s = 30;    // one write of a response or stream piece
    size_t max_body_bytes = size_t{8} << 20;
    size_t max_header_bytes = size_t{64} << 10;
    int64_t max_connections = 16384;  // beyond: new connections are closed at once
    int workers = 16;                 // the pool post_work runs on
    // Body of an error the layer answers itself: (status, code, message) → response.
    std::function<Response(int, const std::string&, const std::string&)> error_body;
};

class Server {
public:
    explicit Server(Options o);
    ~Server();
    Server(const Server&) = delete;
    Server& operator=(const Server&) = delete;

    // `path` is exact, or a prefix when it ends in '*'. Register before bind().
    void route(const std::string& method, const std::string& path, Handler h);
    // Bind and listen (throws IoError naming host:port); returns the port.
    int bind();
    // Serve on the calling thread until stop().
    void run();
    // Stop accepting and serving; run() returns. Blocked stream writes return false.
    void stop();
    bool stopped() const;
    // Run `fn` on the worker pool.
    void post_work(std::function<void()> fn);
    int64_t connections() const;

    struct Impl;

private:
    std::unique_ptr<Impl> impl_;
};

}  // namespace zs::serve::http
