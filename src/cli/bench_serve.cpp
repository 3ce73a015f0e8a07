// `zerospeed bench serve`: a load generator for any OpenAI-compatible /v1/completions server
// (ours, llama.cpp's llama-server, vLLM), after DeepSpeed-FastGen's methodology with vLLM's
// metrics.
//
// Load: closed-loop clients (--clients 1,4,16: each sends its next request when the previous one
// ends) or open-loop arrivals (--rates 0.5,1,2 requests/s; Poisson, or gamma with --burstiness).
// Prompt and output lengths are normal with sd 0.3 x mean (clamped to >= 1), prompts are token
// ids (sliced from --text tokenized with --tokenizer, else random ids) so every server sees the
// same tokens, and requests set ignore_eos so every request generates exactly its max_tokens.
//
// Per load point it reports requests/s, output tokens/s, TTFT, TPOT and ITL (p50/p90/p99), and
// effective throughput: requests/s that met FastGen's SLA — first token within
// prompt_tokens / --sla-prompt-rate seconds, and an EMA (alpha = 2/17, i.e. over ~16 tokens) of
// the generation rate that never falls below --sla-gen-rate tokens/s. The figures are appended to
// --out (JSON lines with --label) and --plot draws every label found there as an SVG.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <sstream>
#include <thread>

#include <fmt/format.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include "base/error.h"
#include "base/log.h"
#include "cli/commands.h"
#include "cli/svg.h"
#include "io/atomic_file.h"
#include "io/tokenizer.h"

namespace zs::cli {

namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

struct Url {
    std::string scheme_host_port;  // http://host:port
};

struct ReqResult {
    bool ok = false;
    std::string error;
    int64_t prompt_tokens = 0, max_tokens = 0, output_tokens = 0;
    double ttft = 0, e2e = 0;
    std::vector<double> itl;  // gaps between content chunks (s)
    bool sla = false;
};

double percentile(std::vector<double> v, double p) {
    if (v.empty()) return 0;
    std::sort(v.begin(), v.end());
    double idx = p / 100.0 * static_cast<double>(v.size() - 1);
    auto lo = static_cast<size_t>(std::floor(idx)), hi = static_cast<size_t>(std::ceil(idx));
    double f = idx - static_cast<double>(lo);
    return v[lo] * (1 - f) + v[hi] * f;
}

class Workload {
public:
    Workload(const BenchServeOptions& o) : o_(o), rng_(o.seed) {
        if (!o.text.empty()) {
            ZS_CHECK_T(ConfigError, !o.tokenizer.empty(), "--text needs --tokenizer");
            io::Tokenizer tok = io::Tokenizer::load(o.tokenizer);  // a .gguf included
            corpus_ = tok.encode(io::read_file(o.text), false, false);
            ZS_CHECK_T(ConfigError, corpus_.size() > 1024, "--text {}: too little text", o.text);
        }
    }
    // Each load point draws its own prompts (the same for every server measured at that load),
    // so a server's prefix cache cannot reuse the prompts of an earlier point.
    void reseed(uint64_t seed) {
        std::lock_guard<std::mutex> lk(mu_);
        rng_.seed(seed);
    }
    // The next request's prompt ids and max_tokens.
    std::pair<std::vector<int32_t>, int64_t> next() {
        std::lock_guard<std::mutex> lk(mu_);
        auto draw = [&](double mean) {
            std::normal_distribution<double> d(mean, 0.3 * mean);
            return std::max<int64_t>(1, std::llround(d(rng_)));
        };
        int64_t np =
            std::min<int64_t>(draw(static_cast<double>(o_.prompt_tokens)), o_.max_prompt_tokens);
        int64_t no =
            std::min<int64_t>(draw(static_cast<double>(o_.output_tokens)), o_.max_output_tokens);
        std::vector<int32_t> ids(static_cast<size_t>(np));
        if (!corpus_.empty()) {
            std::uniform_int_distribution<size_t> at(0, corpus_.size() - ids.size() - 1);
            size_t a = at(rng_);
            std::copy_n(corpus_.begin() + static_cast<std::ptrdiff_t>(a), ids.size(), ids.begin());
        } else {
            std::uniform_int_distribution<int32_t> tok(256, 16000);
            for (auto& t : ids) t = tok(rng_);
        }
        return {std::move(ids), no};
    }

private:
    const BenchServeOptions& o_;
    std::mt19937_64 rng_;
    std::mutex mu_;
    std::vector<int32_t> corpus_;
};

// One streamed completion; fills timings from the SSE chunks.
ReqResult run_one(const BenchServeOptions& o, const std::string& model, std::vector<int32_t> ids,
                  int64_t max_tokens) {
    ReqResult r;
    r.prompt_tokens = static_cast<int64_t>(ids.size());
    r.max_tokens = max_tokens;
    httplib::Client cli(o.url);
    cli.set_read_timeout(600, 0);
    cli.set_connection_timeout(10, 0);
    json body = {{"model", model},
                 {"prompt", ids},
                 {"max_tokens", max_tokens},
                 {"temperature", 0},
                 {"stream", true},
                 {"ignore_eos", true},
                 {"stream_options", {{"include_usage", true}}}};
    httplib::Request req;
    req.method = "POST";
    req.path = "/v1/completions";
    req.body = body.dump();
    req.set_header("Content-Type", "application/json");
    if (!o.api_key.empty()) req.set_header("Authorization", "Bearer " + o.api_key);
    std::string buf;
    const Clock::time_point t0 = Clock::now();
    Clock::time_point last{};
    int64_t chunks = 0, usage_tokens = -1;
    int status = 0;
    req.response_handler = [&](const httplib::Response& res) {
        status = res.status;
        return true;
    };
    std::string error_body;
    req.content_receiver = [&](const char* data, size_t len, uint64_t, uint64_t) {
        if (status != 200) {
            error_body.append(data, std::min<size_t>(len, 4096));
            return true;
        }
        buf.append(data, len);
        size_t pos;
        while ((pos = buf.find("\n\n")) != std::string::npos) {
            std::string ev = buf.substr(0, pos);
            buf.erase(0, pos + 2);
            if (!ev.starts_with("data: ")) continue;
            std::string payload = ev.substr(6);
            if (payload == "[DONE]") continue;
            json j = json::parse(payload, nullptr, false);
            if (j.is_discarded()) continue;
            if (j.contains("error")) {
                r.error = j["error"].dump();
                continue;
            }
            if (j.contains("usage") && j["usage"].is_object()) {
                usage_tokens = j["usage"].value("completion_tokens", int64_t{-1});
            }
            if (!j.contains("choices") || j["choices"].empty()) continue;
            const json& c = j["choices"][0];
            std::string text =
                c.contains("text") && c["text"].is_string() ? c["text"].get<std::string>() : "";
            if (text.empty()) continue;
            Clock::time_point now = Clock::now();
            if (chunks == 0) {
                r.ttft = std::chrono::duration<double>(now - t0).count();
            } else {
                r.itl.push_back(std::chrono::duration<double>(now - last).count());
            }
            last = now;
            ++chunks;
        }
        return true;
    };
    httplib::Response res;
    httplib::Error err = httplib::Error::Success;
    bool sent = cli.send(req, res, err);
    r.e2e = std::chrono::duration<double>(Clock::now() - t0).count();
    if (!sent || status != 200) {
        r.error =
            fmt::format("HTTP {} ({}) {}{}", status, httplib::to_string(err), r.error, error_body);
        return r;
    }
    r.output_tokens = usage_tokens >= 0 ? usage_tokens : chunks;
    r.ok = r.error.empty() && chunks > 0;
    // FastGen SLA.
    const double ttft_budget = static_cast<double>(r.prompt_tokens) / o.sla_prompt_rate;
    bool ok = r.ttft <= ttft_budget;
    double ema = -1;
    const double alpha = 2.0 / 17.0;
    // Per-chunk rate: tokens in the gap / gap (a chunk carries >= 1 token).
    const double tokens_per_chunk =
        chunks > 1 ? static_cast<double>(std::max<int64_t>(r.output_tokens - 1, 1)) /
                         static_cast<double>(chunks - 1)
                   : 1.0;
    for (size_t i = 0; i < r.itl.size(); ++i) {
        double rate = tokens_per_chunk / std::max(r.itl[i], 1e-6);
        ema = ema < 0 ? rate : alpha * rate + (1 - alpha) * ema;
        if (i >= 15 && ema < o.sla_gen_rate) ok = false;
    }
    if (r.itl.size() < 16 && r.itl.size() > 0) {
        double mean_gap = (r.e2e - r.ttft) / static_cast<double>(r.itl.size());
        if (tokens_per_chunk / mean_gap < o.sla_gen_rate) ok = false;
    }
    r.sla = ok && r.ok;
    return r;
}

struct Point {
    std::string label, mode;
    double load = 0;  // clients or rate
    int64_t n_ok = 0, n_failed = 0;
    double seconds = 0, req_s = 0, out_tok_s = 0, eff_req_s = 0;
    double ttft[3]{}, tpot[3]{}, itl[3]{}, e2e[3]{};
    std::string first_error;

    json to_json() const {
        auto trio = [](const double* v) {
            return json{{"p50", v[0]}, {"p90", v[1]}, {"p99", v[2]}};
        };
        return json{{"label", label},
                    {"mode", mode},
                    {"load", load},
                    {"ok", n_ok},
                    {"failed", n_failed},
                    {"seconds", seconds},
                    {"requests_per_s", req_s},
                    {"output_tokens_per_s", out_tok_s},
                    {"effective_requests_per_s", eff_req_s},
                    {"ttft_s", trio(ttft)},
                    {"tpot_s", trio(tpot)},
                    {"itl_s", trio(itl)},
                    {"e2e_s", trio(e2e)}};
    }
};

Point summarize(const std::vector<ReqResult>& rs, double seconds) {
    Point p;
    std::vector<double> ttft, tpot, itl, e2e;
    int64_t out = 0, sla = 0;
    for (const ReqResult& r : rs) {
        if (!r.ok) {
            ++p.n_failed;
            if (p.first_error.empty()) p.first_error = r.error;
            continue;
        }
        ++p.n_ok;
        out += r.output_tokens;
        sla += r.sla ? 1 : 0;
        ttft.push_back(r.ttft);
        e2e.push_back(r.e2e);
        if (r.output_tokens > 1) {
            tpot.push_back((r.e2e - r.ttft) / static_cast<double>(r.output_tokens - 1));
        }
        itl.insert(itl.end(), r.itl.begin(), r.itl.end());
    }
    p.seconds = seconds;
    p.req_s = static_cast<double>(p.n_ok) / seconds;
    p.out_tok_s = static_cast<double>(out) / seconds;
    p.eff_req_s = static_cast<double>(sla) / seconds;
    const double ps[3] = {50, 90, 99};
    for (int i = 0; i < 3; ++i) {
        p.ttft[i] = percentile(ttft, ps[i]);
        p.tpot[i] = percentile(tpot, ps[i]);
        p.itl[i] = percentile(itl, ps[i]);
        p.e2e[i] = percentile(e2e, ps[i]);
    }
    return p;
}

std::vector<double> parse_list(const std::string& s, const char* flag) {
    std::vector<double> v;
    std::stringstream ss(s);
    std::string item;
    while (std::getline(ss, item, ',')) {
        try {
            v.push_back(std::stod(item));
        } catch (const std::exception&) {
            throw ConfigError(
                fmt::format("{}: expected comma-separated numbers, got '{}'", flag, s));
        }
        ZS_CHECK_T(ConfigError, v.back() > 0, "{}: values must be positive", flag);
    }
    return v;
}

std::string served_model(const BenchServeOptions& o) {
    if (!o.model.empty()) return o.model;
    httplib::Client cli(o.url);
    httplib::Headers h;
    if (!o.api_key.empty()) h.emplace("Authorization", "Bearer " + o.api_key);
    auto res = cli.Get("/v1/models", h);
    ZS_CHECK_T(IoError, res && res->status == 200, "bench serve: GET {}/v1/models failed ({})",
               o.url, res ? std::to_string(res->status) : httplib::to_string(res.error()));
    json j = json::parse(res->body, nullptr, false);
    ZS_CHECK_T(IoError, !j.is_discarded() && j.contains("data") && !j["data"].empty(),
               "bench serve: {}/v1/models lists no model", o.url);
    return j["data"][0]["id"].get<std::string>();
}

void write_plot(const std::string& results, const std::string& out) {
    std::map<std::string, std::vector<json>> by_label;
    std::istringstream in(io::read_file(results));
    std::string line;
    while (std::getline(in, line)) {
        json j = json::parse(line, nullptr, false);
        if (j.is_discarded() || !j.contains("label")) continue;
        by_label[j["label"].get<std::string>()].push_back(j);
    }
    static const char* colors[] = {"#1f77b4", "#d62728", "#2ca02c",
                                   "#9467bd", "#ff7f0e", "#8c564b"};
    std::vector<SvgSeries> tpot, ttft, eff;
    size_t ci = 0;
    for (auto& [label, pts] : by_label) {
        std::sort(pts.begin(), pts.end(), [](const json& a, const json& b) {
            return a["output_tokens_per_s"].get<double>() < b["output_tokens_per_s"].get<double>();
        });
        SvgSeries a{label + " p99", colors[ci % 6], {}}, b{label + " p99", colors[ci % 6], {}},
            c{label, colors[ci % 6], {}};
        for (const json& p : pts) {
            double x = p["output_tokens_per_s"].get<double>();
            a.pts.emplace_back(x, p["tpot_s"]["p99"].get<double>() * 1000);
            b.pts.emplace_back(x, p["ttft_s"]["p99"].get<double>());
            c.pts.emplace_back(p["load"].get<double>(),
                               p["effective_requests_per_s"].get<double>());
        }
        tpot.push_back(a);
        ttft.push_back(b);
        eff.push_back(c);
        ++ci;
    }
    const int W = 760, H = 270;
    std::string svg = fmt::format(
        R"(<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{}">)", W, 3 * H + 40);
    svg += R"(<rect width="100%" height="100%" fill="#fafafa"/>)";
    svg += svg_panel(tpot, "p99 time per output token (ms) vs output tokens/s", "tokens/s", 10, 30,
                     W - 20, H - 30, false);
    svg += svg_panel(ttft, "p99 time to first token (s) vs output tokens/s", "tokens/s", 10, H + 30,
                     W - 20, H - 30, false);
    svg += svg_panel(eff, "effective throughput (requests/s meeting the SLA) vs load", "load", 10,
                     2 * H + 30, W - 20, H - 30, false);
    svg += "</svg>\n";
    io::write_file_atomic(out, svg);
}

}  // namespace

int run_bench_serve(const BenchServeOptions& o) {
    if (!o.plot_only) {
        ZS_CHECK_T(ConfigError, o.clients.empty() != o.rates.empty(),
                   "bench serve: give exactly one of --clients (closed loop) or --rates (open "
                   "loop)");
        const std::string model = served_model(o);
        Workload wl(o);
        const bool closed = !o.clients.empty();
        const std::vector<double> loads =
            parse_list(closed ? o.clients : o.rates, closed ? "--clients" : "--rates");
        fmt::print(
            "bench serve: {} model '{}' | prompt ~{} tokens, output ~{} tokens (sd 0.3x), "
            "{} requests per point | SLA: first token <= prompt/{} s, generation EMA >= {} "
            "tokens/s\n",
            o.url, model, o.prompt_tokens, o.output_tokens, o.requests, o.sla_prompt_rate,
            o.sla_gen_rate);
        fmt::print("{:>8} {:>6} {:>8} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}\n",
                   closed ? "clients" : "rate", "ok", "req/s", "out tok/s", "eff req/s", "ttft50",
                   "ttft99", "tpot50", "tpot99", "itl50", "itl99", "e2e99");
        // Warm-up: one request so model loading or first-call costs are not measured.
        {
            wl.reseed(o.seed + 7);
            auto [ids, mt] = wl.next();
            run_one(o, model, ids, std::min<int64_t>(mt, 4));
        }
        for (double load : loads) {
            wl.reseed(o.seed * 1000003 + static_cast<uint64_t>(std::llround(load * 1000)));
            std::vector<ReqResult> results(static_cast<size_t>(o.requests));
            const Clock::time_point t0 = Clock::now();
            std::atomic<int64_t> next{0}, done{0};
            std::vector<std::thread> threads;
            if (closed) {
                const int n = static_cast<int>(load);
                for (int c = 0; c < n; ++c) {
                    threads.emplace_back([&] {
                        for (int64_t i; (i = next++) < o.requests;) {
                            auto [ids, mt] = wl.next();
                            results[static_cast<size_t>(i)] = run_one(o, model, std::move(ids), mt);
                            ++done;
                        }
                    });
                }
            } else {
                std::mt19937_64 rng(o.seed + 1);
                const double k = o.burstiness;
                std::gamma_distribution<double> gap(k, 1.0 / (load * k));
                double at = 0;
                for (int64_t i = 0; i < o.requests; ++i) {
                    at += gap(rng);
                    auto when = t0 + std::chrono::duration_cast<Clock::duration>(
                                         std::chrono::duration<double>(at));
                    std::this_thread::sleep_until(when);
                    auto [ids, mt] = wl.next();
                    threads.emplace_back([&, i, ids = std::move(ids), mt = mt]() mutable {
                        results[static_cast<size_t>(i)] = run_one(o, model, std::move(ids), mt);
                        ++done;
                    });
                }
            }
            for (auto& t : threads) t.join();
            const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
            Point p = summarize(results, secs);
            p.label = o.label;
            p.mode = closed ? "clients" : "rate";
            p.load = load;
            fmt::print(
                "{:>8} {:>6} {:>8.3f} {:>9.1f} {:>9.3f} {:>8.3f} {:>8.3f} {:>8.4f} {:>8.4f} "
                "{:>8.4f} {:>8.4f} {:>8.2f}\n",
                load, p.n_ok, p.req_s, p.out_tok_s, p.eff_req_s, p.ttft[0], p.ttft[2], p.tpot[0],
                p.tpot[2], p.itl[0], p.itl[2], p.e2e[2]);
            if (p.n_failed > 0) {
                log_warn("bench serve: {} request(s) failed; first: {}", p.n_failed, p.first_error);
            }
            if (!o.out.empty()) {
                std::ofstream f(o.out, std::ios::app);
                ZS_CHECK_T(IoError, f.good(), "--out {}: cannot append", o.out);
                f << p.to_json().dump() << "\n";
            }
        }
    }
    if (!o.plot.empty()) {
        ZS_CHECK_T(ConfigError, !o.out.empty(), "--plot needs --out (the results to draw)");
        write_plot(o.out, o.plot);
        fmt::print("bench serve: plot written to {}\n", o.plot);
    }
    return 0;
}

}  // namespace zs::cli
