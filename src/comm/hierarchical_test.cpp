// Hierarchical collectives on thread-ranks (the local backend) split into hosts: every collective
// and dtype against the flat local communicator (the oracle). Integers, max/min and the
// data-moving ops are bit-identical; float sum/avg are bit-identical to a serial emulation of
// the stated order (each host folds its ranks in local order, the inter group of the element's
// shard folds the host partials in its rank order, rounding to the dtype after each stage), and
// within the derived tolerance of the flat result. Also: uneven hosts refused, sub-communicators
// in the wrong order refused, a missing rank named as a hierarchical op's stage within the
// timeout, and ops posted back to back completing in order.
#include "comm/hierarchical.h"

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <map>
#include <random>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "base/error.h"
#include "core/half.h"

namespace zs::comm {
namespace {

using core::DType;

constexpr DType kDTypes[] = {DType::f32, DType::bf16, DType::f16,
                             DType::i32, DType::i64,  DType::i8};
constexpr ReduceOp kOps[] = {ReduceOp::sum, ReduceOp::avg, ReduceOp::max, ReduceOp::min};

// The placement as the test derives it, independently of HostLayout: a rank's local index is its
// position among its host's ranks in rank order; the inter group of local index l holds the
// ranks with that index, in rank order.
struct Hosts {
    int n = 0, n_hosts = 0, per_host = 0;
    std::vector<int> host_of, local_of;             // [N]
    std::map<int, std::vector<int>> ranks_of_host;  // host -> [L] ranks
    std::vector<std::vector<int>> inter_of_local;   // [L][H] ranks
};

Hosts derive(const std::vector<int>& host_of_rank) {
    Hosts h;
    h.n = static_cast<int>(host_of_rank.size());
    h.host_of = host_of_rank;
    for (int g = 0; g < h.n; ++g)
        h.ranks_of_host[host_of_rank[static_cast<size_t>(g)]].push_back(g);
    h.n_hosts = static_cast<int>(h.ranks_of_host.size());
    h.per_host = h.n / h.n_hosts;
    h.local_of.assign(static_cast<size_t>(h.n), 0);
    h.inter_of_local.assign(static_cast<size_t>(h.per_host), {});
    for (const auto& [host, ranks] : h.ranks_of_host) {
        for (size_t i = 0; i < ranks.size(); ++i)
            h.local_of[static_cast<size_t>(ranks[i])] = static_cast<int>(i);
    }
    for (int g = 0; g < h.n; ++g)
        h.inter_of_local[static_cast<size_t>(h.local_of[static_cast<size_t>(g)])].push_back(g);
    return h;
}

// Rank r's input for case c: deterministic, so any rank can rebuild every rank's. Integers span
// their type (sums wrap in i8/i32: the oracle wraps too); floats have random mantissas over
// eight binades, so the reduction order shows in the last bits.
Tensor input(int r, int c, int64_t n, DType t) {
    std::mt19937_64 rng(301 + 7919 * static_cast<uint64_t>(c) + static_cast<uint64_t>(r));
    if (core::is_floating(t)) {
        std::uniform_real_distribution<float> mant(-1.0f, 1.0f);
        std::uniform_int_distribution<int> expo(-4, 4);
        Tensor f = Tensor::empty({n}, DType::f32);
        for (int64_t i = 0; i < n; ++i) f.data<float>()[i] = std::ldexp(mant(rng), expo(rng));
        return f.to(t);
    }
    const int64_t lim = t == DType::i8 ? 127 : t == DType::i32 ? 2147483647 : int64_t{1} << 40;
    std::uniform_int_distribution<int64_t> d(-lim, lim);
    Tensor v = Tensor::empty({n}, DType::i64);
    for (int64_t i = 0; i < n; ++i) v.data<int64_t>()[i] = d(rng);
    return v.to(t);
}

float as_f32(const Tensor& t, int64_t i) {
    return core::load_f32(t.data_ptr(), t.dtype(), static_cast<size_t>(i));
}

float round_to(DType t, float x) {
    char buf[8];
    core::convert(buf, t, &x, DType::f32, 1);
    return core::load_f32(buf, t, 0);
}

bool bit_identical(const Tensor& a, const Tensor& b) {
    return a.dtype() == b.dtype() && a.numel() == b.numel() &&
           (a.nbytes() == 0 || std::memcmp(a.data_ptr(), b.data_ptr(), a.nbytes()) == 0);
}

// The hierarchical result for one element of a float sum/avg, in the stated order. xs[q] is
// rank q's value; `shard` the local index whose inter group reduces this element. Mirrors the
// local backend's fold (first value, then += in rank order; avg divides in f32) per stage.
float emulate(const Hosts& h, const std::vector<float>& xs, int shard, ReduceOp op, DType t) {
    float total = 0.0f;
    const auto& inter = h.inter_of_local[static_cast<size_t>(shard)];
    for (size_t i = 0; i < inter.size(); ++i) {
        const auto& host = h.ranks_of_host.at(h.host_of[static_cast<size_t>(inter[i])]);
        float acc = 0.0f;
        for (size_t k = 0; k < host.size(); ++k) {
            const float x = xs[static_cast<size_t>(host[k])];
            acc = k == 0 ? x : acc + x;
        }
        if (op == ReduceOp::avg) acc /= static_cast<float>(h.per_host);
        const float partial = round_to(t, acc);
        total = i == 0 ? partial : total + partial;
    }
    if (op == ReduceOp::avg) total /= static_cast<float>(h.n_hosts);
    return round_to(t, total);
}

// |hier - flat| bound for a float sum (avg: scale S by 1/N). f32 recursive summation of k terms
// errs by at most (k-1)u·S (u = 2^-24, S = sum of |x|): flat (N-1)u·S, hierarchical (L-1 + H-1)
// u·S, plus one division rounding (flat) or two (avg per stage): (N+L+H)u·S, +1 for second-order
// terms. A 16-bit dtype adds its roundings: one in flat, one per stage in the hierarchy, each at
// most u_t·S: 3u_t·S (u_t = 2^-8 bf16, 2^-11 f16).
double tolerance(const Hosts& h, DType t, ReduceOp op, double abs_sum) {
    const double u_t = t == DType::bf16  ? std::ldexp(1.0, -8)
                       : t == DType::f16 ? std::ldexp(1.0, -11)
                                         : 0.0;
    const double s = op == ReduceOp::avg ? abs_sum / h.n : abs_sum;
    return s * ((h.n + h.per_host + h.n_hosts + 1) * std::ldexp(1.0, -24) + 3 * u_t);
}

// got vs want (the flat oracle) for a reduction whose element i reduces the ranks' inputs at
// xs_at(q, i) and is reduced by the inter group of local index shard_of(i).
void expect_reduced(const Hosts& h, const Tensor& got, const Tensor& want, ReduceOp op,
                    const std::vector<Tensor>& inputs, int64_t offset,
                    const std::function<int(int64_t)>& shard_of, const std::string& what) {
    const DType t = got.dtype();
    if (!core::is_floating(t) || op == ReduceOp::max || op == ReduceOp::min) {
        EXPECT_TRUE(bit_identical(got, want)) << what;
        return;
    }
    std::vector<float> xs(static_cast<size_t>(h.n));
    for (int64_t i = 0; i < got.numel(); ++i) {
        double abs_sum = 0;
        for (int q = 0; q < h.n; ++q) {
            xs[static_cast<size_t>(q)] = as_f32(inputs[static_cast<size_t>(q)], offset + i);
            abs_sum += std::fabs(xs[static_cast<size_t>(q)]);
        }
        const float emulated = emulate(h, xs, shard_of(i), op, t);
        ASSERT_EQ(as_f32(got, i), emulated) << what << " element " << i << " (stated order)";
        ASSERT_NEAR(as_f32(got, i), as_f32(want, i), tolerance(h, t, op, abs_sum))
            << what << " element " << i << " (flat oracle)";
    }
}

std::string describe(const char* op, DType t, ReduceOp rop, int64_t n,
                     const std::vector<int>& hosts) {
    std::string s =
        fmt::format("{} {} {} n={} hosts {{", op, core::to_string(t), to_string(rop), n);
    for (int x : hosts) s += std::to_string(x) + ",";
    return s + "}";
}

std::unique_ptr<Communicator> compose(Communicator& world, const Hosts& h,
                                      const std::vector<int>& host_of_rank) {
    const int r = world.rank();
    auto intra = world.split(h.host_of[static_cast<size_t>(r)], r);
    auto inter = world.split(h.local_of[static_cast<size_t>(r)], r);
    auto flat = world.split(0, r);
    return make_hierarchical(std::move(flat), std::move(intra), std::move(inter), host_of_rank);
}

void check_placement(const std::vector<int>& host_of_rank) {
    const Hosts h = derive(host_of_rank);
    run_local(h.n, [&](int r, Communicator& world) {
        auto hier = compose(world, h, host_of_rank);
        ASSERT_EQ(hier->rank(), r);
        ASSERT_EQ(hier->size(), h.n);
        int c = 0;
        for (DType t : kDTypes) {
            for (ReduceOp op : kOps) {
                // allreduce, counts divisible by L and not (padded).
                for (int64_t n : {int64_t{0}, int64_t{1}, int64_t{7}, int64_t{12}, int64_t{13}}) {
                    ++c;
                    std::vector<Tensor> inputs;
                    for (int q = 0; q < h.n; ++q) inputs.push_back(input(q, c, n, t));
                    Tensor want = inputs[static_cast<size_t>(r)].clone();
                    Tensor got = inputs[static_cast<size_t>(r)].clone();
                    world.allreduce(want, op).wait();
                    hier->allreduce(got, op).wait();
                    const int64_t shard_n = (n + h.per_host - 1) / h.per_host;
                    expect_reduced(
                        h, got, want, op, inputs, 0,
                        [&](int64_t i) { return static_cast<int>(i / shard_n); },
                        describe("allreduce", t, op, n, host_of_rank));
                }
                // reduce_scatter: block m per rank.
                for (int64_t m : {int64_t{0}, int64_t{1}, int64_t{5}}) {
                    ++c;
                    std::vector<Tensor> inputs;
                    for (int q = 0; q < h.n; ++q) inputs.push_back(input(q, c, m * h.n, t));
                    Tensor want = Tensor::empty({m}, t), got = Tensor::empty({m}, t);
                    world.reduce_scatter(want, inputs[static_cast<size_t>(r)], op).wait();
                    hier->reduce_scatter(got, inputs[static_cast<size_t>(r)], op).wait();
                    const int shard = h.local_of[static_cast<size_t>(r)];
                    expect_reduced(
                        h, got, want, op, inputs, r * m, [&](int64_t) { return shard; },
                        describe("reduce_scatter", t, op, m, host_of_rank));
                }
            }
            for (int64_t m : {int64_t{0}, int64_t{1}, int64_t{5}}) {
                ++c;
                Tensor mine = input(r, c, m, t);
                Tensor want = Tensor::empty({m * h.n}, t), got = Tensor::empty({m * h.n}, t);
                world.allgather(want, mine).wait();
                hier->allgather(got, mine).wait();
                EXPECT_TRUE(bit_identical(got, want))
                    << describe("allgather", t, ReduceOp::sum, m, host_of_rank);
                for (int root = 0; root < h.n; ++root) {
                    Tensor w = mine.clone(), g = mine.clone();
                    world.broadcast(w, root).wait();
                    hier->broadcast(g, root).wait();
                    EXPECT_TRUE(bit_identical(g, w))
                        << describe("broadcast", t, ReduceOp::sum, m, host_of_rank) << " root "
                        << root;
                }
                Tensor x = input(r, c, m * h.n, t);
                Tensor w = Tensor::empty({m * h.n}, t), g = Tensor::empty({m * h.n}, t);
                world.all_to_all(w, x).wait();
                hier->all_to_all(g, x).wait();
                EXPECT_TRUE(bit_identical(g, w))
                    << describe("all_to_all", t, ReduceOp::sum, m, host_of_rank);
            }
        }
    });
}

TEST(Hier, FourRanksTwoHostsHostMajor) { check_placement({0, 0, 1, 1}); }
TEST(Hier, FourRanksTwoHostsInterleaved) { check_placement({0, 1, 0, 1}); }
TEST(Hier, SixRanksThreeHostsOfTwo) { check_placement({0, 0, 1, 1, 2, 2}); }
TEST(Hier, SixRanksTwoHostsOfThree) { check_placement({0, 0, 0, 1, 1, 1}); }
// Inter groups list the hosts in different orders (local 0: hosts 0 1 2; local 1: hosts 1 0 2).
TEST(Hier, SixRanksIrregularPlacement) { check_placement({0, 1, 1, 0, 2, 2}); }
TEST(Hier, OneHostAndOneRankPerHost) {
    check_placement({0, 0, 0, 0});
    check_placement({3, 2, 1, 0});
}

TEST(Hier, UnevenHostsRefused) {
    try {
        HostLayout::from({0, 0, 1});
        ADD_FAILURE() << "expected NotSupported";
    } catch (const NotSupported& e) {
        std::string m = e.what();
        EXPECT_NE(m.find("same number of ranks on every host"), std::string::npos) << m;
        EXPECT_NE(m.find("host 0: 2 rank(s) (0, 1); host 1: 1 rank(s) (2)"), std::string::npos)
            << m;
    }
    EXPECT_THROW(HostLayout::from({}), ConfigError);
    EXPECT_THROW(HostLayout::from({0, -1}), ConfigError);
    // Refused before any split: every rank throws, and the parent stays usable.
    run_local(3, [](int, Communicator& world) {
        EXPECT_THROW(split_hierarchical(world, {0, 1, 1}), NotSupported);
        EXPECT_THROW(make_hierarchical(world.split(0, world.rank()), world.split(0, world.rank()),
                                       world.split(0, world.rank()), {0, 1, 1}),
                     NotSupported);
        Tensor t = Tensor::empty({2}, DType::f32);
        t.fill(1.0);
        world.allreduce(t, ReduceOp::sum).wait();
        EXPECT_EQ(t.data<float>()[1], 3.0f);
    });
}

TEST(Hier, MisorderedSubCommunicatorRefused) {
    run_local(4, [](int r, Communicator& world) {
        auto intra = world.split(r / 2, -r);  // reversed: local index 0 would be rank 1
        auto inter = world.split(r % 2, r);
        try {
            make_hierarchical(world.split(0, r), std::move(intra), std::move(inter), {0, 0, 1, 1});
            ADD_FAILURE() << "expected ConfigError";
        } catch (const ConfigError& e) {
            EXPECT_NE(std::string(e.what()).find("intra"), std::string::npos) << e.what();
        }
    });
}

TEST(Hier, MissingRankNamesTheHierarchicalOpWithinTimeout) {
    std::atomic<int> failures{0};
    auto t0 = std::chrono::steady_clock::now();
    run_local(
        4,
        [&](int r, Communicator& world) {
            auto hier = split_hierarchical(world, {0, 0, 1, 1});
            Tensor t = Tensor::zeros({1024}, DType::f32);
            hier->allreduce(t, ReduceOp::sum).wait();  // #1: everyone
            if (r == 3) return;                        // rank 3 skips #2
            try {
                hier->allreduce(t, ReduceOp::sum).wait();
                ADD_FAILURE() << "expected a timeout";
            } catch (const CommError& e) {
                std::string m = e.what();
                EXPECT_NE(m.find("hierarchical allreduce #2 on group 'local.split(0)'"),
                          std::string::npos)
                    << m;
                EXPECT_NE(m.find("2 hosts x 2 ranks, 4096 bytes"), std::string::npos) << m;
                // Rank 2 waits for rank 3 inside host 1; ranks 0 and 1 for their inter peers.
                const char* stage =
                    r == 2 ? "stage 'intra reduce_scatter'" : "stage 'inter allreduce'";
                EXPECT_NE(m.find(stage), std::string::npos) << m;
                EXPECT_NE(m.find("never arrived within 1 s"), std::string::npos) << m;
                ++failures;
            }
            // Poisoned: later ops fail at once, naming the first failure.
            auto t1 = std::chrono::steady_clock::now();
            try {
                hier->reduce_scatter(Tensor::empty({256}, DType::f32), t, ReduceOp::sum).wait();
                ADD_FAILURE() << "expected the poisoned communicator to refuse";
            } catch (const CommError& e) {
                EXPECT_NE(std::string(e.what()).find("hierarchical reduce_scatter #3"),
                          std::string::npos)
                    << e.what();
                EXPECT_NE(std::string(e.what()).find("already failed"), std::string::npos)
                    << e.what();
            }
            EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count(),
                      0.5);
        },
        1.0);
    EXPECT_EQ(failures, 3);
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_LT(s, 4.0);
}

// Ops posted back to back run in posting order on the worker (waited in reverse); the ZeRO
// in-place forms (out a slice of in, in a slice of out); the delegated ops.
TEST(Hier, PostedOpsCompleteInOrderAndDelegatesWork) {
    const std::vector<int> hosts = {0, 1, 0, 1, 2, 2};
    run_local(6, [&](int r, Communicator& world) {
        auto hier = split_hierarchical(world, hosts);
        const int64_t m = 3;
        Tensor a = input(r, 1, 10, DType::i32), a_want = a.clone();
        Tensor b = input(r, 2, 6 * m, DType::i64), b_want = b.clone();
        Tensor c = Tensor::zeros({6 * m}, DType::bf16),
               c_want = Tensor::empty({6 * m}, DType::bf16);
        Tensor mine = input(r, 3, m, DType::bf16);
        c.slice(0, r * m, (r + 1) * m).copy_from(mine);
        Tensor d = input(r, 4, 4, DType::i8), d_want = d.clone();
        Work wa = hier->allreduce(a, ReduceOp::sum);
        Work wb = hier->reduce_scatter(b.slice(0, r * m, (r + 1) * m), b, ReduceOp::max);
        Work wc = hier->allgather(c, c.slice(0, r * m, (r + 1) * m));
        Work wd = hier->broadcast(d, 4);
        wd.wait();
        wc.wait();
        wb.wait();
        wa.wait();
        world.allreduce(a_want, ReduceOp::sum).wait();
        Tensor b_out = Tensor::empty({m}, DType::i64);
        world.reduce_scatter(b_out, b_want, ReduceOp::max).wait();
        world.allgather(c_want, mine).wait();
        world.broadcast(d_want, 4).wait();
        EXPECT_TRUE(bit_identical(a, a_want));
        EXPECT_TRUE(bit_identical(b.slice(0, r * m, (r + 1) * m).contiguous(), b_out));
        EXPECT_TRUE(bit_identical(c, c_want));
        EXPECT_TRUE(bit_identical(d, d_want));

        Tensor s = Tensor::empty({2}, DType::i64), got = Tensor::empty({2}, DType::i64);
        s.fill(static_cast<double>(r));
        hier->send(s, (r + 1) % 6, 5).wait();
        hier->recv(got, (r + 5) % 6, 5).wait();
        EXPECT_EQ(got.data<int64_t>()[1], (r + 5) % 6);
        hier->barrier();
        auto sub = hier->split(r % 2, r);
        EXPECT_EQ(sub->size(), 3);
        EXPECT_EQ(sub->rank(), r / 2);
    });
}

}  // namespace
}  // namespace zs::comm
