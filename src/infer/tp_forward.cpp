#include "infer/tp_forward.h"

#include <algorithm>
#include <chrono>
#include <thread>

#include "base/error.h"
#include "base/log.h"
#include "base/timer.h"

namespace zs::infer {

namespace {

enum Kind : int64_t { kStop = 0, kForward = 1, kHandshake = 2 };

Tensor i64_buffer(int64_t n) {
    return Tensor::empty({n}, DType::i64, core::Device::cpu(), core::MemCategory::buffers);
}

// Headers travel point to point (a receive the follower polls, see wait_politely; a collective
// would hold a core busy inside MPI while the server idles); the payload that follows at once is
// broadcast.
constexpr int kHeaderTag = 0x7f01;

void send_header(comm::Communicator& tp, int64_t kind, int64_t a, int64_t b, int64_t c, int64_t d) {
    Tensor h = i64_buffer(5);
    int64_t* p = h.data<int64_t>();
    p[0] = kind;
    p[1] = a;
    p[2] = b;
    p[3] = c;
    p[4] = d;
    std::vector<comm::Work> sent;
    for (int r = 1; r < tp.size(); ++r) sent.push_back(tp.send(h, r, kHeaderTag));
    for (comm::Work& w : sent) w.wait();
}

// Wait for rank 0's next message without holding a core while the server idles: poll for 2 ms
// (a busy server's next forward comes sooner), then sleep between polls, backing off to 1 ms.
void wait_politely(comm::Work w) {
    Timer t;
    auto pause = std::chrono::microseconds(50);
    while (!w.test()) {
        if (t.seconds() < 2e-3) continue;
        std::this_thread::sleep_for(pause);
        pause = std::min(pause * 2, std::chrono::microseconds(1000));
    }
}

}  // namespace

void tp_send_handshake(comm::Communicator& tp, const KvCacheSpec& spec) {
    send_header(tp, kHandshake, spec.n_blocks, spec.block_size, 0, 0);
}

void tp_send_stop(comm::Communicator& tp) { send_header(tp, kStop, 0, 0, 0, 0); }

void tp_send_forward(comm::Communicator& tp, const Tensor& ids, const Tensor& pos,
                     const std::vector<SeqSlice>& slices, const std::vector<int64_t>& logit_rows) {
    const int64_t N = ids.numel(), S = static_cast<int64_t>(slices.size());
    const auto R = static_cast<int64_t>(logit_rows.size());
    int64_t B = 0;
    for (const SeqSlice& s : slices) B += static_cast<int64_t>(s.blocks.size());
    send_header(tp, kForward, N, S, R, B);
    Tensor msg = i64_buffer(2 * N + 4 * S + B + R);
    int64_t* p = msg.data<int64_t>();
    for (int64_t i = 0; i < N; ++i) *p++ = ids.data<int32_t>()[i];
    for (int64_t i = 0; i < N; ++i) *p++ = pos.data<int32_t>()[i];
    for (const SeqSlice& s : slices) {
        *p++ = s.start;
        *p++ = s.n_tokens;
        *p++ = s.pos;
        *p++ = static_cast<int64_t>(s.blocks.size());
    }
    for (const SeqSlice& s : slices) {
        for (BlockId b : s.blocks) *p++ = b;
    }
    for (int64_t r : logit_rows) *p++ = r;
    tp.broadcast(msg, 0).wait();
}

int64_t follow_forwards(models::Transformer& model, const EngineConfig& cfg,
                        comm::Communicator& tp) {
    ZS_CHECK(tp.rank() != 0, "follow_forwards runs on tensor-parallel ranks 1..tp-1");
    const KvCacheSpec spec = kv_cache_spec(model, cfg);
    KvBlockPool pool(spec);
    PagedKvAttention attn(pool);
    // Expert parallelism: rank 0's batch runs on every rank; each dispatches only its slice.
    if (model.ep_size() > 1) model.set_ep_replicated_inputs(true);
    Tensor header = i64_buffer(5);
    int64_t forwards = 0;
    for (bool first = true;; first = false) {
        wait_politely(tp.recv(header, 0, kHeaderTag));
        const int64_t* h = header.data<int64_t>();
        if (first) {
            ZS_CHECK_T(ConfigError, h[0] == kHandshake,
                       "tensor-parallel serving: rank 0 sent no handshake (kind {})", h[0]);
            ZS_CHECK_T(ConfigError, h[1] == spec.n_blocks && h[2] == spec.block_size,
                       "tensor-parallel serving: rank 0's KV cache has {} blocks of {} tokens, "
                       "rank {}'s {} of {} (every rank must get the same --kv-cache-memory, "
                       "--kv-blocks and --block-size)",
                       h[1], h[2], tp.rank(), spec.n_blocks, spec.block_size);
            continue;
        }
        if (h[0] == kStop) return forwards;
        ZS_CHECK(h[0] == kForward, "tensor-parallel serving: unknown message kind {}", h[0]);
        const int64_t N = h[1], S = h[2], R = h[3], B = h[4];
        Tensor msg = i64_buffer(2 * N + 4 * S + B + R);
        tp.broadcast(msg, 0).wait();
        const int64_t* p = msg.data<int64_t>();
        Tensor ids =
            Tensor::empty({N}, DType::i32, core::Device::cpu(), core::MemCategory::buffers);
        Tensor pos =
            Tensor::empty({N}, DType::i32, core::Device::cpu(), core::MemCategory::buffers);
        for (int64_t i = 0; i < N; ++i) ids.data<int32_t>()[i] = static_cast<int32_t>(*p++);
        for (int64_t i = 0; i < N; ++i) pos.data<int32_t>()[i] = static_cast<int32_t>(*p++);
        const int64_t* meta = p;
        p += 4 * S;
        std::vector<BlockId> tables(static_cast<size_t>(B));
        for (int64_t i = 0; i < B; ++i) {
            tables[static_cast<size_t>(i)] = static_cast<BlockId>(*p++);
            ZS_CHECK(tables[static_cast<size_t>(i)] == kNoBlock ||
                         (tables[static_cast<size_t>(i)] >= 0 &&
                          tables[static_cast<size_t>(i)] < spec.n_blocks),
                     "tensor-parallel serving: block {} outside the pool of {}",
                     tables[static_cast<size_t>(i)], spec.n_blocks);
        }
        std::vector<int64_t> logit_rows(p, p + R);
        std::vector<SeqSlice> slices;
        size_t at = 0;
        for (int64_t s = 0; s < S; ++s) {
            const auto nb = static_cast<size_t>(meta[4 * s + 3]);
            slices.push_back({meta[4 * s], meta[4 * s + 1], meta[4 * s + 2],
                              std::span<const BlockId>(tables.data() + at, nb)});
            at += nb;
        }
        attn.set_batch(std::move(slices));
        model.forward_tokens(ids, pos, attn, logit_rows);
        ++forwards;
    }
}

}  // namespace zs::infer
