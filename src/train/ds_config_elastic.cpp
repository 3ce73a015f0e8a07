#include "train/ds_config_elastic.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <numeric>
#include <string>
#include <system_error>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "base/error.h"
#include "base/log.h"

namespace zs::train {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// --- elasticity (DeepSpeed 0.19.6 and 0.19.7: elasticity/config.py ElasticityConfig,
// elasticity/elasticity.py compute_elastic_config, runtime/config.py DeepSpeedConfig.__init__) ---

// The first 38 highly composite numbers (OEIS A002182), DeepSpeed's HCN_LIST: a batch that is one
// of them times a micro-batch size has many divisors, so it splits evenly over many rank counts.
constexpr int64_t kHighlyComposite[] = {
    1,      2,      4,      6,      12,     24,     36,     48,    60,    120,
    180,    240,    360,    720,    840,    1260,   1680,   2520,  5040,  7560,
    10080,  15120,  20160,  25200,  27720,  45360,  50400,  55440, 83160, 110880,
    166320, 221760, 277200, 332640, 498960, 554400, 665280, 720720};

// The rank counts in [lo, hi] over which `batch` splits into whole micro-batches of one of the
// sizes (DeepSpeed's get_valid_gpus): for each size m dividing batch, k = batch / m itself, and
// k's divisors up to k / 2.
std::vector<int64_t> elastic_valid_counts(int64_t batch, const std::vector<int64_t>& micro,
                                          int64_t lo, int64_t hi) {
    std::set<int64_t> out;
    for (int64_t m : micro) {
        if (batch % m != 0) continue;
        const int64_t k = batch / m;
        if (lo <= k && k <= hi) out.insert(k);
        const int64_t top = std::min(hi, k / 2);
        if (std::max<int64_t>(lo, 1) > top) continue;
        if (top <= k / top) {  // top <= sqrt(k): every i in range, as DeepSpeed counts
            for (int64_t i = std::max<int64_t>(lo, 1); i <= top; ++i) {
                if (k % i == 0) out.insert(i);
            }
        } else {  // the same set from divisor pairs (i, k / i), in O(sqrt(k))
            for (int64_t i = 1; i <= k / i; ++i) {
                if (k % i != 0) continue;
                for (int64_t d : {i, k / i}) {
                    if (d >= lo && d <= top) out.insert(d);
                }
            }
        }
    }
    return {out.begin(), out.end()};
}

// The batch and the rank counts it fits, for one (max batch, rank range): version 0.1, and the
// per-node search of 0.2 (DeepSpeed's _get_compatible_gpus_v01). `valid` is nullopt where
// DeepSpeed's search keeps no candidate (its valid_gpus stays None).
struct ElasticSearch {
    int64_t batch = 0;
    std::optional<std::vector<int64_t>> valid;
};

ElasticSearch elastic_search(const std::vector<int64_t>& micro, int64_t max_batch, int64_t min_gpus,
                             int64_t max_gpus, bool prefer_larger) {
    const int64_t min_micro = *std::min_element(micro.begin(), micro.end());
    // DeepSpeed's `min_gpus or 1`, `max_gpus or max // min(micro)`: 0 means the default (a 0.2
    // rank range of less than one node).
    if (min_gpus == 0) min_gpus = 1;
    if (max_gpus == 0) max_gpus = max_batch / min_micro;
    // Bases: every micro-batch size and their LCM (one larger than max_batch is dropped: scaling
    // only grows it). Each base b < max_batch is scaled by the largest highly composite number
    // <= max_batch / b (the last one, 720720, when all are smaller).
    std::vector<int64_t> bases = micro;
    int64_t lcm = 1;
    for (int64_t m : micro) {
        const int64_t f = m / std::gcd(lcm, m);
        lcm = lcm > max_batch / f ? max_batch + 1 : lcm * f;  // saturates: dropped below
    }
    bases.push_back(lcm);
    std::set<int64_t> candidates;
    for (int64_t b : bases) {
        if (b > max_batch) continue;
        if (b == max_batch) {
            candidates.insert(b);
            continue;
        }
        const int64_t q = max_batch / b;
        int64_t h = kHighlyComposite[std::size(kHighlyComposite) - 1];
        for (int64_t x : kHighlyComposite) {
            if (x > q) break;
            h = x;
        }
        candidates.insert(h * b);
    }
    // The candidate fitting the most rank counts; among equals the larger (or smaller) batch.
    // DeepSpeed starts from (min micro-batch, no counts) and replaces it on more counts, or on as
    // many and a strictly better batch, so a candidate fitting none can still win.
    ElasticSearch best{min_micro, std::nullopt};
    size_t best_n = 0;
    for (int64_t bs : candidates) {
        std::vector<int64_t> v = elastic_valid_counts(bs, micro, min_gpus, max_gpus);
        const bool better_batch = prefer_larger ? bs > best.batch : bs < best.batch;
        if (v.size() > best_n || (v.size() == best_n && better_batch)) {
            best_n = v.size();
            best = {bs, std::move(v)};
        }
    }
    return best;
}

// "1, 2, 3, 4, 6", or the first 20 and the last of a long list; "none" for an empty one.
std::string format_counts(const std::vector<int64_t>& v) {
    if (v.empty()) return "none";
    if (v.size() <= 24) return fmt::format("{}", fmt::join(v, ", "));
    return fmt::format("{}, ..., {} ({} counts)", fmt::join(v.begin(), v.begin() + 20, ", "),
                       v.back(), v.size());
}

// The elastic batch for `world` ranks, written into `b`, and the rank counts it fits (DeepSpeed's
// compute_elastic_config with world_size > 0, then the accumulation DeepSpeedConfig derives).
void compute_elastic_batch(ElasticityConfig& e, int64_t world, const Section& s, BatchConfig& b) {
    const std::vector<int64_t>& micro = e.micro_batch_sizes;
    auto max_micro_over = [&](int64_t cap) {
        for (int64_t m : micro) {
            if (m > cap) return m;
        }
        return int64_t{0};
    };
    int64_t batch = 0;
    std::optional<std::vector<int64_t>> valid;
    if (e.version == 0.1) {
        if (int64_t m = max_micro_over(e.max_train_batch_size)) {
            s.fail("micro_batch_sizes",
                   fmt::format("{} exceeds max_train_batch_size ({}); every micro-batch size "
                               "must be <= it",
                               m, e.max_train_batch_size));
        }
        ElasticSearch r = elastic_search(micro, e.max_train_batch_size, e.min_gpus, e.max_gpus,
                                         e.prefer_larger_batch);
        batch = r.batch;
        valid = std::move(r.valid);
    } else {  // 0.2 (_get_compatible_gpus_v02): the search runs over nodes
        if (e.num_gpus_per_node % e.model_parallel_size != 0) {
            s.fail("num_gpus_per_node",
                   fmt::format("{} is not divisible by model_parallel_size {} (version 0.2)",
                               e.num_gpus_per_node, e.model_parallel_size));
        }
        const int64_t per_node = e.num_gpus_per_node / e.model_parallel_size;  // dp ranks a node
        const int64_t node_cap = e.max_train_batch_size / per_node;
        if (int64_t m = max_micro_over(node_cap)) {
            s.fail("micro_batch_sizes",
                   fmt::format("{} exceeds max_train_batch_size / (num_gpus_per_node / "
                               "model_parallel_size) = {} / {} = {} (version 0.2 searches per "
                               "node); every micro-batch size must be <= it",
                               m, e.max_train_batch_size, per_node, node_cap));
        }
        ElasticSearch r = elastic_search(micro, node_cap, e.min_gpus / e.num_gpus_per_node,
                                         e.max_gpus / e.num_gpus_per_node, e.prefer_larger_batch);
        if (!r.valid) {
            s.fail("micro_batch_sizes",
                   fmt::format("no batch <= {} per node fits any node count in [{}, {}] "
                               "(DeepSpeed fails here too)",
                               node_cap, e.min_gpus / e.num_gpus_per_node,
                               e.max_gpus / e.num_gpus_per_node));
        }
        batch = r.batch * per_node;
        valid.emplace();
        for (int64_t n : *r.valid) valid->push_back(n * per_node);
        if (std::find(valid->begin(), valid->end(), world / e.model_parallel_size) ==
            valid->end()) {
            // A world size outside the list: the largest multiple of micro x dp ranks that is <=
            // the max, over the micro-batch sizes (the largest or smallest of those). DeepSpeed
            // computes it in floating point; so does this, to round as it does.
            const double dp = static_cast<double>(world) /
                              static_cast<double>(e.num_gpus_per_node) *
                              static_cast<double>(per_node);
            std::optional<double> pick;
            for (int64_t m : micro) {
                const double unit = static_cast<double>(m) * dp;
                const double c =
                    std::floor(static_cast<double>(e.max_train_batch_size) / unit) * unit;
                if (!pick || (e.prefer_larger_batch ? c > *pick : c < *pick)) pick = c;
            }
            batch = static_cast<int64_t>(*pick);
            valid = std::vector<int64_t>{static_cast<int64_t>(dp)};
        }
    }
    // nullopt only from 0.1 with no candidate (DeepSpeed then fails testing `world in None`).
    const std::vector<int64_t> counts = valid.value_or(std::vector<int64_t>{});
    e.valid_world_sizes = counts;
    if (std::find(counts.begin(), counts.end(), world) == counts.end()) {
        ZS_THROW(ConfigError,
                 "{}: elasticity: world size {} is not one the elastic batch fits: batch {} "
                 "(version {}) fits {} data-parallel ranks",
                 s.source(), world, batch, e.version, format_counts(counts));
    }
    // The largest micro-batch size dividing the per-rank batch.
    int64_t mbs = 0;
    for (int64_t m : micro) {
        if ((batch / world) % m == 0) mbs = std::max(mbs, m);
    }
    if (mbs == 0) {
        ZS_THROW(ConfigError,
                 "{}: elasticity: no micro-batch size in [{}] divides the per-rank batch {} / {} "
                 "= {}",
                 s.source(), fmt::join(micro, ", "), batch, world, batch / world);
    }
    if (batch <= 0) {
        ZS_THROW(ConfigError,
                 "{}: elasticity: max_train_batch_size {} is below one micro-batch on each of "
                 "the {} ranks (the elastic batch is 0)",
                 s.source(), e.max_train_batch_size, world);
    }
    b = {batch, mbs, batch / (mbs * world)};
}

// "elasticity" (ElasticityConfig's checks, then compute_elastic_config). Returns the batch it
// derives for `world` ranks, or nullopt when absent or not enabled (DeepSpeed then ignores the
// block, unchecked).
}  // namespace

std::optional<BatchConfig> parse_elasticity(Section& root, int world, ElasticityConfig& e) {
    std::optional<Section> s = root.get_section("elasticity", false);
    if (!s) return std::nullopt;
    e.enabled = s->get_bool("enabled").value_or(false);
    if (!e.enabled) {
        if (!s->present("enabled")) {
            root.warn("elasticity",
                      "has no \"enabled\": true, so it is ignored (as DeepSpeed ignores it)");
        }
        return std::nullopt;
    }
    // Above 2^53 the version-0.2 fallback's floating point (DeepSpeed's) is no longer exact, and
    // DeepSpeed's int(a / b) no longer equals a // b.
    constexpr int64_t kMaxBatch = int64_t{1} << 53;
    std::optional<int64_t> max_batch = s->get_int("max_train_batch_size", 1, kMaxBatch);
    if (!max_batch) s->fail("max_train_batch_size", "required when elasticity is enabled");
    e.max_train_batch_size = *max_batch;
    const nlohmann::json* mb = s->get_raw("micro_batch_sizes");
    if (!mb) s->fail("micro_batch_sizes", "required when elasticity is enabled");
    const bool ints =
        mb->is_array() && !mb->empty() &&
        std::all_of(mb->begin(), mb->end(), [&](const nlohmann::json& x) {
            return x.is_number_integer() && x.get<int64_t>() >= 1 && x.get<int64_t>() <= kMaxBatch;
        });
    if (!ints) {
        s->fail(
            "micro_batch_sizes",
            fmt::format("expected a non-empty list of integers >= 1, got {}", describe_json(*mb)));
    }
    e.micro_batch_sizes.clear();
    for (const nlohmann::json& x : *mb) e.micro_batch_sizes.push_back(x.get<int64_t>());
    e.min_gpus = s->get_int("min_gpus", 1, kMaxBatch).value_or(1);
    e.max_gpus = s->get_int("max_gpus", 1, kMaxBatch).value_or(10000);
    if (e.max_gpus < e.min_gpus) {
        s->fail("max_gpus",
                fmt::format("must be >= min_gpus ({}), got {}", e.min_gpus, e.max_gpus));
    }
    e.model_parallel_size = s->get_int("model_parallel_size", 1, kMaxBatch).value_or(1);
    e.num_gpus_per_node = s->get_int("num_gpus_per_node", 1, kMaxBatch).value_or(1);
    e.min_time = s->get_number("min_time", 0.0, kInf).value_or(0.0);
    e.prefer_larger_batch = s->get_bool("prefer_larger_batch").value_or(true);
    e.ignore_non_elastic_batch_info = s->get_bool("ignore_non_elastic_batch_info").value_or(false);
    // DeepSpeed takes float(version): a number or a numeric string.
    if (const nlohmann::json* v = s->get_raw("version")) {
        std::optional<double> d;
        if (v->is_number()) {
            d = v->get<double>();
        } else if (v->is_string()) {
            const std::string& t = v->get_ref<const std::string&>();
            double x = 0;
            auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), x);
            if (ec == std::errc() && end == t.data() + t.size()) d = x;
        }
        if (!d) s->fail("version", fmt::format("expected 0.1 or 0.2, got {}", describe_json(*v)));
        e.version = *d;
    }
    if (e.model_parallel_size > 1 && e.version != 0.2) {
        s->fail("model_parallel_size", fmt::format("{} > 1 needs version 0.2, got version {}",
                                                   e.model_parallel_size, e.version));
    }
    if (e.version != 0.1 && e.version != 0.2) {
        s->fail("version", fmt::format("expected 0.1 or 0.2, got {}", e.version));
    }
    s->finish();
    BatchConfig b;
    compute_elastic_batch(e, world, *s, b);
    // DeepSpeed refuses batch keys next to the block unless told to ignore them.
    for (const char* key :
         {"train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps"}) {
        if (!root.present(key)) continue;
        if (!e.ignore_non_elastic_batch_info) {
            root.fail(key,
                      "elasticity is enabled and derives the batch itself; remove this key, or "
                      "set elasticity.ignore_non_elastic_batch_info: true to have it ignored");
        }
        root.warn(key, "ignored: elasticity derives the batch (ignore_non_elastic_batch_info)");
    }
    log_info0(
        "{}: elasticity (version {}): train_batch_size {}, train_micro_batch_size_per_gpu {}, "
        "gradient_accumulation_steps {} for {} ranks; the batch fits {} data-parallel ranks",
        root.source(), e.version, b.train_batch_size, b.train_micro_batch_size_per_gpu,
        b.gradient_accumulation_steps, world, format_counts(e.valid_world_sizes));
    return b;
}

}  // namespace zs::train
