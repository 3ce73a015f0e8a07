#include "parallel/topology.h"

#include <fmt/format.h>

#include "base/error.h"

namespace zs::parallel {

const char* to_string(Group g) {
    switch (g) {
        case Group::tp:
            return "tp";
        case Group::sp:
            return "sp";
        case Group::dp:
            return "dp";
        case Group::pp:
            return "pp";
        case Group::ep:
            return "ep";
        case Group::edp:
            return "edp";
        case Group::dense_dp:
            return "dense_dp";
        case Group::ulysses:
            return "ulysses";
        case Group::ring:
            return "ring";
    }
    return "?";
}

std::string Sizes::str() const {
    std::string out = fmt::format("dp={} tp={} pp={} ep={} sp={}", dp, tp, pp, ep, sp);
    if (ring != 1) out += fmt::format(" (ulysses={} x ring={})", ulysses(), ring);
    return out;
}

Sizes resolve(Sizes s, int world) {
    ZS_CHECK_T(ConfigError, world >= 1, "parallel: world size must be >= 1 (got {})", world);
    ZS_CHECK_T(ConfigError, s.tp >= 1 && s.pp >= 1 && s.ep >= 1 && s.sp >= 1 && s.dp >= 0,
               "parallel: sizes must be >= 1 ({})", s.str());
    ZS_CHECK_T(ConfigError, s.ring >= 1 && s.sp % s.ring == 0,
               "parallel: the ring degree {} must divide the sequence-parallel degree sp = {} "
               "(sp = ulysses x ring)",
               s.ring, s.sp);
    const int64_t model = int64_t{s.tp} * s.sp * s.pp;
    if (s.dp == 0) {
        ZS_CHECK_T(ConfigError, world % model == 0,
                   "parallel: tp x sp x pp = {} x {} x {} = {} does not divide the {} ranks of "
                   "the world",
                   s.tp, s.sp, s.pp, model, world);
        s.dp = static_cast<int>(world / model);
    }
    ZS_CHECK_T(ConfigError, model * s.dp == world,
               "parallel: dp x tp x sp x pp = {} x {} x {} x {} = {} ranks, but the world has {}",
               s.dp, s.tp, s.sp, s.pp, model * s.dp, world);
    ZS_CHECK_T(ConfigError, s.dp % s.ep == 0,
               "parallel: ep = {} must divide dp = {} (expert-parallel groups are carved out of "
               "the data-parallel ranks, as DeepSpeed-MoE does)",
               s.ep, s.dp);
    return s;
}

int rank_of(const Sizes& s, const Coords& c) {
    return c.tp + s.tp * (c.sp + s.sp * (c.dp + s.dp * c.pp));
}

Coords coords_of(const Sizes& s, int rank) {
    Coords c;
    c.tp = rank % s.tp;
    rank /= s.tp;
    c.sp = rank % s.sp;
    rank /= s.sp;
    c.dp = rank % s.dp;
    c.pp = rank / s.dp;
    c.ep = c.dp % s.ep;
    c.edp = c.dp / s.ep;
    c.ulysses = c.sp % s.ulysses();
    c.ring = c.sp / s.ulysses();
    return c;
}

namespace {

// Which coordinates a group holds fixed, and its rank order: the free coordinates, the faster
// one first.
bool same_group(const Sizes& s, const Coords& a, const Coords& b, Group g) {
    switch (g) {
        case Group::tp:
            return a.sp == b.sp && a.dp == b.dp && a.pp == b.pp;
        case Group::sp:
            return a.tp == b.tp && a.dp == b.dp && a.pp == b.pp;
        case Group::dp:
            return a.tp == b.tp && a.sp == b.sp && a.pp == b.pp;
        case Group::pp:
            return a.tp == b.tp && a.sp == b.sp && a.dp == b.dp;
        case Group::ep:
            return a.tp == b.tp && a.sp == b.sp && a.pp == b.pp && a.dp / s.ep == b.dp / s.ep;
        case Group::edp:
            return a.tp == b.tp && a.sp == b.sp && a.pp == b.pp && a.dp % s.ep == b.dp % s.ep;
        case Group::dense_dp:
            return a.tp == b.tp && a.pp == b.pp;
        case Group::ulysses:
            return a.tp == b.tp && a.dp == b.dp && a.pp == b.pp && a.ring == b.ring;
        case Group::ring:
            return a.tp == b.tp && a.dp == b.dp && a.pp == b.pp && a.ulysses == b.ulysses;
    }
    return false;
}

}  // namespace

std::vector<int> members(const Sizes& s, int rank, Group g) {
    const int world = s.dp * s.tp * s.sp * s.pp;
    const Coords me = coords_of(s, rank);
    std::vector<int> out;
    // World-rank order is the group-rank order: the free coordinates vary in the same
    // fastest-first order as the world ranks do.
    for (int r = 0; r < world; ++r) {
        if (same_group(s, me, coords_of(s, r), g)) out.push_back(r);
    }
    return out;
}

void check_model(const Sizes& s, const ModelDims& m) {
    const std::string name = m.name.empty() ? std::string("the model") : m.name;
    ZS_CHECK_T(ConfigError, m.heads % s.tp == 0,
               "parallel: tp = {} does not divide {}'s {} attention heads (num_attention_heads)",
               s.tp, name, m.heads);
    ZS_CHECK_T(ConfigError, m.kv_heads % s.tp == 0 || s.tp % m.kv_heads == 0,
               "parallel: tp = {} and {}'s {} KV heads (num_key_value_heads): one must divide the "
               "other (KV heads are split when tp divides them, replicated when they divide tp)",
               s.tp, name, m.kv_heads);
    ZS_CHECK_T(ConfigError, m.heads % (int64_t{s.tp} * s.ulysses()) == 0,
               "parallel: tp x sp = {} x {} does not divide {}'s {} attention heads (Ulysses "
               "attention splits the heads of each tensor-parallel shard over sp{})",
               s.tp, s.ulysses(), name, m.heads,
               s.ring > 1 ? fmt::format("; here the Ulysses part of sp = {} = {} x ring {}", s.sp,
                                        s.ulysses(), s.ring)
                          : std::string());
    if (s.ep > 1) {
        ZS_CHECK_T(ConfigError, m.experts > 0,
                   "parallel: ep = {} but {} has no experts (num_local_experts)", s.ep, name);
        ZS_CHECK_T(ConfigError, m.experts % s.ep == 0,
                   "parallel: ep = {} does not divide {}'s {} experts (num_local_experts)", s.ep,
                   name, m.experts);
    }
    ZS_CHECK_T(ConfigError, s.pp <= m.layers,
               "parallel: pp = {} exceeds {}'s {} layers (num_hidden_layers): a stage holds at "
               "least one",
               s.pp, name, m.layers);
}

Topology::Topology(comm::Communicator& world, Sizes sizes)
    : world_(world), s_(resolve(sizes, world.size())), c_(coords_of(s_, world.rank())) {
    // One split per group, in the same order on every rank (split is collective over the world).
    // Colour: the first world rank of the group; key: this rank's world rank (the group-rank order
    // is the world-rank order, see members()).
    // A group of one rank is a self communicator, a group of every rank the world itself (its
    // collectives keep the world's diagnostics, e.g. naming the ranks missing from a timed-out
    // collective); the sizes are the same on every rank, so every rank skips the same splits.
    for (Group g : {Group::tp, Group::sp, Group::dp, Group::pp, Group::ep, Group::edp,
                    Group::dense_dp, Group::ulysses, Group::ring}) {
        const std::vector<int> m = members(s_, world.rank(), g);
        if (static_cast<int>(m.size()) == world.size()) {
            groups_.push_back(nullptr);
        } else if (m.size() == 1) {
            groups_.push_back(comm::make_self());
        } else {
            groups_.push_back(world.split(m.front(), world.rank()));
        }
    }
}

comm::Communicator& Topology::group(Group g) const {
    const auto& c = groups_[static_cast<size_t>(g)];
    return c ? *c : world_;
}

std::string Topology::describe() const {
    std::string out = fmt::format("rank {} of {}: dp {}/{} tp {}/{} sp {}/{} pp {}/{} ep {}/{}",
                                  world_.rank(), world_.size(), c_.dp, s_.dp, c_.tp, s_.tp, c_.sp,
                                  s_.sp, c_.pp, s_.pp, c_.ep, s_.ep);
    if (s_.ring > 1) {
        out +=
            fmt::format(" (ulysses {}/{} ring {}/{})", c_.ulysses, s_.ulysses(), c_.ring, s_.ring);
    }
    return out;
}

}  // namespace zs::parallel
