// Topology against independent references: the coordinates of a naive nested enumeration in the
// stated order (pp outermost, then dp, sp, tp), Megatron-LM's documented 16-GPU example
// (initialize_model_parallel: tp=2, pp=4), the partition properties of every group, and the
// communicators themselves (each group's allgather of world ranks over threads-as-ranks).
#include "parallel/topology.h"

#include <algorithm>
#include <map>
#include <set>

#include <gtest/gtest.h>

#include "base/error.h"

namespace zs::parallel {
namespace {

using core::DType;
using core::Tensor;

std::vector<Sizes> all_sizes(int world) {
    std::vector<Sizes> out;
    for (int tp = 1; tp <= world; ++tp)
        for (int sp = 1; sp <= world; ++sp)
            for (int pp = 1; pp <= world; ++pp) {
                if (world % (tp * sp * pp) != 0) continue;
                const int dp = world / (tp * sp * pp);
                for (int ep = 1; ep <= dp; ++ep) {
                    if (dp % ep == 0) out.push_back(Sizes{dp, tp, pp, ep, sp});
                }
            }
    return out;
}

TEST(Topology, CoordinatesFollowTheStatedOrder) {
    for (int world : {1, 2, 4, 6, 8, 12, 16}) {
        for (const Sizes& s : all_sizes(world)) {
            int r = 0;
            for (int pp = 0; pp < s.pp; ++pp)
                for (int dp = 0; dp < s.dp; ++dp)
                    for (int sp = 0; sp < s.sp; ++sp)
                        for (int tp = 0; tp < s.tp; ++tp, ++r) {
                            const Coords c = coords_of(s, r);
                            ASSERT_EQ(c.tp, tp) << s.str() << " rank " << r;
                            ASSERT_EQ(c.sp, sp) << s.str() << " rank " << r;
                            ASSERT_EQ(c.dp, dp) << s.str() << " rank " << r;
                            ASSERT_EQ(c.pp, pp) << s.str() << " rank " << r;
                            ASSERT_EQ(c.ep, dp % s.ep);
                            ASSERT_EQ(c.edp, dp / s.ep);
                            ASSERT_EQ(rank_of(s, c), r);
                        }
            ASSERT_EQ(r, world);
        }
    }
}

TEST(Topology, MegatronsSixteenGpuExample) {
    // Megatron-LM parallel_state.initialize_model_parallel's docstring: 16 GPUs, tp=2, pp=4.
    const Sizes s = resolve(Sizes{0, 2, 4, 1, 1}, 16);
    EXPECT_EQ(s.dp, 2);
    const std::vector<std::vector<int>> dp = {{0, 2},  {1, 3},  {4, 6},   {5, 7},
                                              {8, 10}, {9, 11}, {12, 14}, {13, 15}};
    const std::vector<std::vector<int>> tp = {{0, 1}, {2, 3},   {4, 5},   {6, 7},
                                              {8, 9}, {10, 11}, {12, 13}, {14, 15}};
    const std::vector<std::vector<int>> pp = {
        {0, 4, 8, 12}, {1, 5, 9, 13}, {2, 6, 10, 14}, {3, 7, 11, 15}};
    for (const auto& g : dp)
        for (int r : g) EXPECT_EQ(members(s, r, Group::dp), g);
    for (const auto& g : tp)
        for (int r : g) EXPECT_EQ(members(s, r, Group::tp), g);
    for (const auto& g : pp)
        for (int r : g) EXPECT_EQ(members(s, r, Group::pp), g);
}

TEST(Topology, GroupsPartitionTheWorld) {
    for (int world : {4, 8, 12, 16}) {
        for (const Sizes& s : all_sizes(world)) {
            const std::map<Group, int> size = {{Group::tp, s.tp},
                                               {Group::sp, s.sp},
                                               {Group::dp, s.dp},
                                               {Group::pp, s.pp},
                                               {Group::ep, s.ep},
                                               {Group::edp, s.dp / s.ep},
                                               {Group::dense_dp, s.dp * s.sp}};
            for (const auto& [g, n] : size) {
                std::set<int> seen;
                for (int r = 0; r < world; ++r) {
                    const std::vector<int> m = members(s, r, g);
                    ASSERT_EQ(static_cast<int>(m.size()), n) << s.str() << " " << to_string(g);
                    ASSERT_TRUE(std::find(m.begin(), m.end(), r) != m.end());
                    // Every member sees the same group.
                    for (int o : m) ASSERT_EQ(members(s, o, g), m);
                    seen.insert(r);
                }
                ASSERT_EQ(static_cast<int>(seen.size()), world);
            }
            // The expert groups tile each data-parallel group: ep x edp = dp, with one rank in
            // common between any ep group and any edp group of the same dp group.
            for (int r = 0; r < world; ++r) {
                const auto e = members(s, r, Group::ep), d = members(s, r, Group::edp);
                std::vector<int> both;
                std::set_intersection(e.begin(), e.end(), d.begin(), d.end(),
                                      std::back_inserter(both));
                ASSERT_EQ(both, std::vector<int>{r});
            }
        }
    }
}

TEST(Topology, CommunicatorsHoldTheirGroups) {
    const Sizes want{0, 2, 1, 2, 1};  // dp=4 (ep=2 inside it), tp=2 over 8 ranks
    comm::run_local(8, [&](int rank, comm::Communicator& world) {
        Topology t(world, want);
        EXPECT_EQ(t.sizes().dp, 4);
        for (Group g :
             {Group::tp, Group::sp, Group::dp, Group::pp, Group::ep, Group::edp, Group::dense_dp}) {
            comm::Communicator& c = t.group(g);
            const std::vector<int> m = members(t.sizes(), rank, g);
            ASSERT_EQ(c.size(), static_cast<int>(m.size())) << to_string(g);
            Tensor in = Tensor::empty({1}, DType::i32);
            in.data<int32_t>()[0] = rank;
            Tensor out = Tensor::empty({c.size()}, DType::i32);
            c.allgather(out, in).wait();
            std::vector<int> got(out.data<int32_t>(), out.data<int32_t>() + c.size());
            EXPECT_EQ(got, m) << "rank " << rank << " group " << to_string(g);
            EXPECT_EQ(m[static_cast<size_t>(c.rank())], rank);
        }
    });
}

// USP: the sp ranks split into ulysses x ring, Ulysses fastest. A naive nested enumeration (pp,
// dp, ring, ulysses, tp from the outside in) gives each rank's coordinates and, by collecting the
// ranks that share every other coordinate, the Ulysses and ring groups.
TEST(Topology, UspSubGroupsMatchANaiveEnumeration) {
    for (int world : {2, 4, 8, 12, 16}) {
        for (Sizes s : all_sizes(world)) {
            for (int ring = 1; ring <= s.sp; ++ring) {
                if (s.sp % ring != 0) continue;
                s.ring = ring;
                const int U = s.sp / ring;
                std::map<std::vector<int>, std::vector<int>> uly, rng;
                std::vector<std::vector<int>> uly_key(static_cast<size_t>(world)),
                    rng_key(static_cast<size_t>(world));
                int r = 0;
                for (int pp = 0; pp < s.pp; ++pp)
                    for (int dp = 0; dp < s.dp; ++dp)
                        for (int ri = 0; ri < ring; ++ri)
                            for (int u = 0; u < U; ++u)
                                for (int tp = 0; tp < s.tp; ++tp, ++r) {
                                    const Coords c = coords_of(s, r);
                                    ASSERT_EQ(c.ulysses, u) << s.str() << " rank " << r;
                                    ASSERT_EQ(c.ring, ri) << s.str() << " rank " << r;
                                    ASSERT_EQ(c.sp, u + U * ri) << s.str() << " rank " << r;
                                    uly_key[static_cast<size_t>(r)] = {pp, dp, ri, tp};
                                    rng_key[static_cast<size_t>(r)] = {pp, dp, u, tp};
                                    uly[{pp, dp, ri, tp}].push_back(r);
                                    rng[{pp, dp, u, tp}].push_back(r);
                                }
                for (int q = 0; q < world; ++q) {
                    ASSERT_EQ(members(s, q, Group::ulysses), uly[uly_key[static_cast<size_t>(q)]])
                        << s.str() << " rank " << q;
                    ASSERT_EQ(members(s, q, Group::ring), rng[rng_key[static_cast<size_t>(q)]])
                        << s.str() << " rank " << q;
                    // Together they tile the sp group.
                    ASSERT_EQ(
                        members(s, q, Group::ulysses).size() * members(s, q, Group::ring).size(),
                        members(s, q, Group::sp).size());
                }
            }
        }
    }
}

TEST(Topology, UspCommunicatorsHoldTheirGroups) {
    Sizes want{0, 2, 1, 1, 4};  // tp 2 x sp 4 (ulysses 2 x ring 2) over 8 ranks
    want.ring = 2;
    comm::run_local(8, [&](int rank, comm::Communicator& world) {
        Topology t(world, want);
        for (Group g : {Group::sp, Group::ulysses, Group::ring}) {
            comm::Communicator& c = t.group(g);
            const std::vector<int> m = members(t.sizes(), rank, g);
            ASSERT_EQ(c.size(), static_cast<int>(m.size())) << to_string(g);
            Tensor in = Tensor::empty({1}, DType::i32);
            in.data<int32_t>()[0] = rank;
            Tensor out = Tensor::empty({c.size()}, DType::i32);
            c.allgather(out, in).wait();
            std::vector<int> got(out.data<int32_t>(), out.data<int32_t>() + c.size());
            EXPECT_EQ(got, m) << "rank " << rank << " group " << to_string(g);
        }
        EXPECT_EQ(t.group(Group::ulysses).size(), 2);
        EXPECT_EQ(t.group(Group::ring).size(), 2);
    });
}

template <class F>
std::string error_of(F f) {
    try {
        f();
    } catch (const ConfigError& e) {
        return e.what();
    }
    return "(no error)";
}

TEST(Topology, BadSizesAreRefusedNamingThem) {
    EXPECT_NE(error_of([] {
                  resolve(Sizes{0, 3, 1, 1, 1}, 8);
              }).find("tp x sp x pp = 3 x 1 x 1"),
              std::string::npos);
    EXPECT_NE(error_of([] {
                  resolve(Sizes{2, 2, 1, 1, 1}, 8);
              }).find("but the world has 8"),
              std::string::npos);
    EXPECT_NE(error_of([] {
                  resolve(Sizes{0, 1, 1, 3, 1}, 8);
              }).find("ep = 3 must divide dp = 8"),
              std::string::npos);
    EXPECT_NE(error_of([] {
                  resolve(Sizes{0, 0, 1, 1, 1}, 8);
              }).find("must be >= 1"),
              std::string::npos);
    const ModelDims llama{"llama", 32, 8, 0, 16};
    EXPECT_NE(error_of([&] {
                  check_model(Sizes{1, 3, 1, 1, 1}, llama);
              }).find("tp = 3 does not divide llama's 32 attention heads"),
              std::string::npos);
    EXPECT_NE(error_of([&] {
                  check_model(Sizes{1, 1, 1, 1, 64}, llama);
              }).find("tp x sp = 1 x 64"),
              std::string::npos);
    // USP: only the Ulysses part of sp splits the heads; the ring degree must divide sp.
    Sizes usp{1, 1, 1, 1, 128};
    usp.ring = 2;
    EXPECT_NE(error_of([&] {
                  check_model(usp, llama);
              }).find("tp x sp = 1 x 64 does not divide llama's 32 attention heads"),
              std::string::npos);
    EXPECT_NE(
        error_of([&] { check_model(usp, llama); }).find("Ulysses part of sp = 128 = 64 x ring 2"),
        std::string::npos);
    usp.ring = 4;
    EXPECT_EQ(error_of([&] { check_model(usp, llama); }), "(no error)");
    usp.ring = 3;
    EXPECT_NE(error_of([&] {
                  resolve(usp, 128);
              }).find("ring degree 3 must divide the sequence-parallel degree sp = 128"),
              std::string::npos);
    EXPECT_NE(error_of([&] {
                  check_model(Sizes{2, 1, 1, 2, 1}, llama);
              }).find("has no experts"),
              std::string::npos);
    EXPECT_NE(error_of([&] {
                  check_model(Sizes{3, 1, 1, 3, 1}, ModelDims{"mixtral", 32, 8, 8, 32});
              }).find("ep = 3 does not divide mixtral's 8 experts"),
              std::string::npos);
    EXPECT_NE(error_of([&] {
                  check_model(Sizes{1, 1, 17, 1, 1}, llama);
              }).find("pp = 17 exceeds llama's 16 layers"),
              std::string::npos);
    // KV heads: split when tp divides them, replicated when they divide tp; otherwise refused.
    EXPECT_EQ(error_of([&] { check_model(Sizes{1, 16, 1, 1, 1}, llama); }), "(no error)");
    EXPECT_NE(error_of([&] {
                  check_model(Sizes{1, 4, 1, 1, 1}, ModelDims{"odd", 12, 6, 0, 4});
              }).find("one must divide the other"),
              std::string::npos);
    EXPECT_EQ(error_of([&] {
                  check_model(Sizes{2, 2, 2, 2, 1}, ModelDims{"m", 8, 2, 4, 4});
              }),
              "(no error)");
}

}  // namespace
}  // namespace zs::parallel
