// Server metrics in Prometheus text format (/metrics): request and token counters, TTFT / TPOT /
// end-to-end latency and batch-size histograms, and gauges the engine thread refreshes every step
// (queue depth, running sequences, KV blocks used and free). Thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace zs::serve {

class Histogram {
public:
    explicit Histogram(std::vector<double> bounds);
    void observe(double v);
    // Prometheus lines for `name` (cumulative buckets, +Inf, _sum, _count).
    std::string render(const std::string& name, const std::string& help) const;
    int64_t count() const { return count_; }
    double sum() const { return sum_; }

private:
    std::vector<double> bounds_;
    std::vector<int64_t> counts_;
    int64_t count_ = 0;
    double sum_ = 0;
};

struct EngineGauges {
    int64_t waiting = 0, running = 0, kv_blocks_used = 0, kv_blocks_free = 0, kv_blocks_total = 0;
    int64_t steps = 0, preemptions = 0, prefix_cache_hit_tokens = 0;
};

class Metrics {
public:
    Metrics();
    // One HTTP answer (route and status), e.g. ("/v1/completions", 200).
    void request_done(const std::string& route, int status);
    // One finished choice: its latencies in seconds (ttft < 0 when no token was produced).
    void choice_done(int64_t prompt_tokens, int64_t output_tokens, double ttft, double tpot,
                     double e2e);
    // One engine step: tokens in the batch and sequences in it, the forward's time and the whole
    // step's (scheduling, forward, sampling, and handing each request its output).
    void step(int64_t batch_tokens, int64_t batch_seqs, double forward_seconds,
              double step_seconds);
    void set_gauges(const EngineGauges& g);
    void set_http_inflight(int64_t n);
    EngineGauges gauges() const;
    std::string render() const;

private:
    mutable std::mutex mu_;
    std::map<std::pair<std::string, int>, int64_t> requests_;
    int64_t prompt_tokens_ = 0, generation_tokens_ = 0, http_inflight_ = 0;
    Histogram ttft_, tpot_, e2e_, batch_tokens_, batch_seqs_, forward_, step_;
    EngineGauges g_;
};

}  // namespace zs::serve
