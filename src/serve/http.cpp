#include "serve/http.h"

#include <cctype>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <future>
#include <mutex>
#include <optional>
#include <thread>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <fmt/format.h>

#include "base/error.h"
#include "base/log.h"

namespace zs::serve::http {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;
using tcp = net::ip::tcp;
using Ms = std::chrono::milliseconds;

namespace {

Ms ms(double seconds) { return Ms(static_cast<int64_t>(seconds * 1000)); }

std::string lower(std::string_view s) {
    std::string out(s);
    for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return out;
}

// Threads started on demand up to a maximum, so an idle server holds few; a task never waits
// behind a blocked one while the pool is below its maximum.
class WorkerPool {
public:
    explicit WorkerPool(int max_threads) : max_(std::max(1, max_threads)) {}
    ~WorkerPool() { shutdown(); }

    void post(std::function<void()> fn) {
        std::lock_guard<std::mutex> lk(mu_);
        if (stop_) return;
        q_.push_back(std::move(fn));
        if (static_cast<int>(q_.size()) > idle_ && static_cast<int>(threads_.size()) < max_) {
            threads_.emplace_back([this] { loop(); });
        } else {
            cv_.notify_one();
        }
    }

    // Drop queued tasks, wait for running ones.
    void shutdown() {
        std::deque<std::function<void()>> dropped;
        std::vector<std::thread> threads;
        {
            std::lock_guard<std::mutex> lk(mu_);
            stop_ = true;
            dropped.swap(q_);
            threads.swap(threads_);
        }
        cv_.notify_all();
        dropped.clear();
        for (std::thread& t : threads) t.join();
    }

private:
    void loop() {
        std::unique_lock<std::mutex> lk(mu_);
        for (;;) {
            ++idle_;
            cv_.wait(lk, [&] { return stop_ || !q_.empty(); });
            --idle_;
            if (q_.empty()) return;
            std::function<void()> fn = std::move(q_.front());
            q_.pop_front();
            lk.unlock();
            try {
                fn();
            } catch (const std::exception& e) {
                log_error("http worker: {}", e.what());
            }
            fn = nullptr;  // the task's captures die outside the lock
            lk.lock();
        }
    }

    const int max_;
    std::mutex mu_;
    std::condition_variable cv_;
    std::deque<std::function<void()>> q_;
    std::vector<std::thread> threads_;
    int idle_ = 0;
    bool stop_ = false;
};

struct Route {
    std::string method, path;
    bool prefix = false;
    Handler handler;
};

}  // namespace

struct Server::Impl {
    Options o;
    net::io_context ioc{1};
    tcp::acceptor acceptor{ioc};
    net::steady_timer accept_retry{ioc};
    std::vector<Route> routes;
    std::atomic<bool> stopped{false};
    std::atomic<int64_t> connections{0};
    std::chrono::steady_clock::time_point last_refusal_log{};
    WorkerPool workers;

    explicit Impl(Options opts) : o(std::move(opts)), workers(o.workers) {}

    Response error(int status, const std::string& code, const std::string& message) const {
        if (o.error_body) return o.error_body(status, code, message);
        Response r;
        r.status = status;
        r.content_type = "text/plain";
        r.body = message + "\n";
        return r;
    }

    // The route for (method, path); `path_known` tells 405 from 404 when there is none.
    const Route* match(const Request& r, bool* path_known) const {
        *path_known = false;
        for (const Route& rt : routes) {
            const bool hit = rt.prefix
                                 ? r.path.starts_with(rt.path) && r.path.size() > rt.path.size()
                                 : r.path == rt.path;
            if (!hit) continue;
            *path_known = true;
            if (rt.method == r.method) return &rt;
        }
        return nullptr;
    }

    void accept();
};

// One connection: reads a request under its deadline, hands it to a handler, writes the answer,
// and reads the next one (keep-alive) or closes. All of it runs on the I/O thread; workers reach
// it through post().
class Session : public std::enable_shared_from_this<Session> {
public:
    Session(tcp::socket s, Server::Impl& srv)
        : stream_(std::move(s)), srv_(srv), deadline_(stream_.get_executor()) {
        srv_.connections += 1;
    }
    ~Session() { srv_.connections -= 1; }

    void read() {
        parser_.emplace();
        parser_->body_limit(srv_.o.max_body_bytes);
        parser_->header_limit(static_cast<uint32_t>(srv_.o.max_header_bytes));
        timed_out_ = false;
        deadline_.expires_after(ms(srv_.o.request_timeout_s));
        deadline_.async_wait([w = weak_from_this()](beast::error_code ec) {
            if (ec) return;
            if (auto s = w.lock()) {
                s->timed_out_ = true;
                beast::error_code ignored;
                s->stream_.socket().cancel(ignored);
            }
        });
        stream_.expires_never();
        bhttp::async_read(
            stream_, buf_, *parser_,
            [self = shared_from_this()](beast::error_code ec, size_t) { self->on_read(ec); });
    }

    // Answer in one piece; then the next request, or close.
    void send(Response r, bool close_after) {
        auto res = std::make_shared<bhttp::response<bhttp::string_body>>(
            static_cast<bhttp::status>(r.status), version_);
        res->set(bhttp::field::server, "zerospeed");
        res->set(bhttp::field::content_type, r.content_type);
        for (auto& [k, v] : r.headers) res->set(k, v);
        res->body() = std::move(r.body);
        res->keep_alive(keep_alive_ && !close_after);
        res->prepare_payload();
        stream_.expires_after(ms(srv_.o.write_timeout_s));
        bhttp::async_write(stream_, *res,
                           [self = shared_from_this(), res](beast::error_code ec, size_t) {
                               self->after_answer(ec, res->keep_alive());
                           });
    }

    // Run `op` on the I/O thread and wait for the completion it reports (from a worker).
    bool run_sync(std::function<void(std::function<void(bool)>)> op) {
        auto p = std::make_shared<std::promise<bool>>();
        std::future<bool> f = p->get_future();
        net::post(stream_.get_executor(), [self = shared_from_this(), op = std::move(op), p] {
            op([p](bool ok) { p->set_value(ok); });
        });
        while (f.wait_for(Ms(100)) != std::future_status::ready) {
            if (srv_.stopped) return false;
        }
        return f.get();
    }

    void write_head(int status, const std::string& content_type,
                    const std::vector<std::pair<std::string, std::string>>& headers,
                    const std::function<void(bool)>& done) {
        head_ = std::make_shared<bhttp::response<bhttp::empty_body>>(
            static_cast<bhttp::status>(status), version_);
        head_->set(bhttp::field::server, "zerospeed");
        head_->set(bhttp::field::content_type, content_type);
        for (const auto& [k, v] : headers) head_->set(k, v);
        chunked_ = version_ >= 11;
        if (chunked_) {
            head_->chunked(true);
            head_->keep_alive(keep_alive_);
        } else {
            // HTTP/1.0 has no chunked encoding: the body runs to the closed connection.
            head_->keep_alive(false);
            head_->set(bhttp::field::connection, "close");
        }
        sr_ = std::make_shared<bhttp::response_serializer<bhttp::empty_body>>(*head_);
        stream_.expires_after(ms(srv_.o.write_timeout_s));
        bhttp::async_write_header(stream_, *sr_,
                                  [self = shared_from_this(), done](beast::error_code ec, size_t) {
                                      if (ec) self->close();
                                      done(!ec);
                                  });
    }

    void write_piece(std::string data, const std::function<void(bool)>& done) {
        if (data.empty()) return done(true);  // an empty chunk would end the body
        auto buf = std::make_shared<std::string>(std::move(data));
        stream_.expires_after(ms(srv_.o.write_timeout_s));
        auto h = [self = shared_from_this(), buf, done](beast::error_code ec, size_t) {
            if (ec) self->close();
            done(!ec);
        };
        if (chunked_) {
            net::async_write(stream_, bhttp::make_chunk(net::buffer(*buf)), std::move(h));
        } else {
            net::async_write(stream_, net::buffer(*buf), std::move(h));
        }
    }

    void finish_stream(const std::function<void(bool)>& done) {
        if (!chunked_ || !stream_.socket().is_open()) {
            close();
            return done(true);
        }
        stream_.expires_after(ms(srv_.o.write_timeout_s));
        net::async_write(stream_, bhttp::make_chunk_last(),
                         [self = shared_from_this(), done](beast::error_code ec, size_t) {
                             done(!ec);
                             self->after_answer(ec, self->head_->keep_alive());
                         });
    }

    void close() {
        beast::error_code ec;
        deadline_.cancel();
        stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
        stream_.socket().close(ec);
    }

    net::any_io_executor executor() { return stream_.get_executor(); }

private:
    void after_answer(beast::error_code ec, bool keep_alive) {
        if (ec || !keep_alive || srv_.stopped) return close();
        read();
    }

    // Answer an error the layer found, then close (the rest of the request is not read).
    void fail(int status, const std::string& code, const std::string& message) {
        send(srv_.error(status, code, message), true);
    }

    void on_read(beast::error_code ec) {
        deadline_.cancel();
        if (srv_.stopped) return;
        if (ec) {
            const bool some = parser_->got_some();
            const double limit = srv_.o.request_timeout_s;
            if (timed_out_) {
                if (!some) return close();  // an idle keep-alive connection
                if (!parser_->is_header_done()) {
                    return fail(408, "request_timeout",
                                fmt::format("the request head did not arrive within the {} s "
                                            "request deadline",
                                            limit));
                }
                const auto cl = parser_->content_length();
                return fail(408, "request_timeout",
                            cl ? fmt::format("the request body did not arrive within the {} s "
                                             "request deadline: {} of the {} bytes its "
                                             "Content-Length announced",
                                             limit, parser_->get().body().size(), *cl)
                               : fmt::format("the request body did not arrive within the {} s "
                                             "request deadline",
                                             limit));
            }
            if (ec == bhttp::error::end_of_stream || !some) return close();
            if (ec == bhttp::error::body_limit) {
                return fail(413, "payload_too_large",
                            fmt::format("the request body is larger than the limit of {} bytes",
                                        srv_.o.max_body_bytes));
            }
            if (ec == bhttp::error::header_limit) {
                return fail(431, "header_too_large",
                            fmt::format("the request head is larger than the limit of {} bytes",
                                        srv_.o.max_header_bytes));
            }
            if (ec == bhttp::error::partial_message && parser_->is_header_done()) {
                const auto cl = parser_->content_length();
                return fail(400, "invalid_request",
                            cl ? fmt::format("the request body ended after {} of the {} bytes its "
                                             "Content-Length announced",
                                             parser_->get().body().size(), *cl)
                               : std::string("the request body ended early"));
            }
            return fail(400, "invalid_request",
                        fmt::format("malformed HTTP request ({})", ec.message()));
        }
        bhttp::request<bhttp::string_body> m = parser_->release();
        version_ = static_cast<int>(m.version());
        keep_alive_ = m.keep_alive();
        Request r;
        r.method = std::string(m.method_string());
        const std::string_view target(m.target().data(), m.target().size());
        const size_t q = target.find('?');
        r.path = std::string(target.substr(0, q));
        if (q != std::string_view::npos) r.query = std::string(target.substr(q + 1));
        r.version = version_;
        for (const auto& f : m) {
            r.headers.emplace_back(
                lower(std::string_view(f.name_string().data(), f.name_string().size())),
                std::string(f.value()));
        }
        r.body = std::move(m.body());
        bool path_known = false;
        const Route* rt = srv_.match(r, &path_known);
        if (rt == nullptr) {
            return send(
                path_known
                    ? srv_.error(405, "method_not_allowed",
                                 fmt::format("{} is not allowed on {}", r.method, r.path))
                    : srv_.error(404, "not_found", fmt::format("no route {} {}", r.method, r.path)),
                false);
        }
        auto ex = std::make_shared<Exchange>(shared_from_this(), std::move(r));
        try {
            rt->handler(ex);
        } catch (const std::exception& e) {
            log_error("http handler {}: {}", rt->path, e.what());
        }
    }

    beast::tcp_stream stream_;
    Server::Impl& srv_;
    net::steady_timer deadline_;
    beast::flat_buffer buf_;
    std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
    bool timed_out_ = false;
    int version_ = 11;
    bool keep_alive_ = true;
    // The response being streamed.
    std::shared_ptr<bhttp::response<bhttp::empty_body>> head_;
    std::shared_ptr<bhttp::response_serializer<bhttp::empty_body>> sr_;
    bool chunked_ = false;
};

void Server::Impl::accept() {
    acceptor.async_accept(ioc, [this](beast::error_code ec, tcp::socket sock) {
        if (stopped) return;
        if (ec) {
            if (ec == net::error::operation_aborted) return;
            // Out of descriptors (EMFILE) and the like: back off instead of spinning.
            log_warn("serve: accept failed ({}); retrying in 100 ms", ec.message());
            accept_retry.expires_after(Ms(100));
            accept_retry.async_wait([this](beast::error_code e) {
                if (!e) accept();
            });
            return;
        }
        if (connections.load() >= o.max_connections) {
            const auto now = std::chrono::steady_clock::now();
            if (now - last_refusal_log > std::chrono::seconds(10)) {
                last_refusal_log = now;
                log_warn("serve: {} connections open (the limit); closing new ones",
                         connections.load());
            }
            beast::error_code ignored;
            sock.close(ignored);
        } else {
            beast::error_code ignored;
            sock.set_option(tcp::no_delay(true), ignored);
            std::make_shared<Session>(std::move(sock), *this)->read();
        }
        accept();
    });
}

// ---- Request / Exchange ----

std::string Request::header(std::string_view name) const {
    for (const auto& [k, v] : headers) {
        if (k == name) return v;
    }
    return {};
}

Exchange::Exchange(std::shared_ptr<Session> s, Request r)
    : session_(std::move(s)), req_(std::move(r)) {}

Exchange::~Exchange() {
    if (!answered_) {
        respond(Response{500, "application/json", "{\"error\":\"unanswered\"}", {}});
    } else if (streaming_) {
        // A stream left unfinished (its producer failed): the client sees the body cut.
        net::post(session_->executor(), [s = session_] { s->close(); });
    }
}

void Exchange::respond(Response r) {
    if (answered_) return;
    answered_ = true;
    net::post(session_->executor(),
              [s = session_, r = std::move(r)]() mutable { s->send(std::move(r), false); });
}

bool Exchange::begin_stream(int status, const std::string& content_type,
                            std::vector<std::pair<std::string, std::string>> headers) {
    if (answered_) return false;
    answered_ = true;
    streaming_ = true;
    return session_->run_sync([s = session_, status, content_type,
                               headers = std::move(headers)](std::function<void(bool)> done) {
        s->write_head(status, content_type, headers, done);
    });
}

bool Exchange::write(std::string data) {
    if (!streaming_) return false;
    return session_->run_sync(
        [s = session_, d = std::move(data)](std::function<void(bool)> done) mutable {
            s->write_piece(std::move(d), done);
        });
}

void Exchange::end_stream() {
    if (!streaming_) return;
    streaming_ = false;
    session_->run_sync([s = session_](std::function<void(bool)> done) { s->finish_stream(done); });
}

// ---- Server ----

Server::Server(Options o) : impl_(std::make_unique<Impl>(std::move(o))) {}

Server::~Server() {
    stop();
    impl_->workers.shutdown();
}

void Server::route(const std::string& method, const std::string& path, Handler h) {
    Route r;
    r.method = method;
    r.prefix = !path.empty() && path.back() == '*';
    r.path = r.prefix ? path.substr(0, path.size() - 1) : path;
    r.handler = std::move(h);
    impl_->routes.push_back(std::move(r));
}

int Server::bind() {
    Impl& m = *impl_;
    beast::error_code ec;
    tcp::resolver resolver(m.ioc);
    auto eps = resolver.resolve(m.o.host, std::to_string(m.o.port), ec);
    ZS_CHECK_T(IoError, !ec && !eps.empty(), "serve: cannot resolve host '{}' ({})", m.o.host,
               ec.message());
    const tcp::endpoint ep = eps.begin()->endpoint();
    m.acceptor.open(ep.protocol(), ec);
    if (!ec) m.acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
    if (!ec) m.acceptor.bind(ep, ec);
    ZS_CHECK_T(IoError, !ec,
               "serve: cannot bind {}:{} ({}: in use, or not an address of this machine)", m.o.host,
               m.o.port, ec.message());
    m.acceptor.listen(4096, ec);
    ZS_CHECK_T(IoError, !ec, "serve: cannot listen on {}:{} ({})", m.o.host, m.o.port,
               ec.message());
    return m.acceptor.local_endpoint().port();
}

void Server::run() {
    impl_->accept();
    impl_->ioc.run();
}

void Server::stop() {
    impl_->stopped = true;
    impl_->ioc.stop();
}

bool Server::stopped() const { return impl_->stopped.load(); }

void Server::post_work(std::function<void()> fn) { impl_->workers.post(std::move(fn)); }

int64_t Server::connections() const { return impl_->connections.load(); }

}  // namespace zs::serve::http
