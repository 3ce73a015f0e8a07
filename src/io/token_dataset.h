// Token datasets: the shards `zerospeed data prepare` writes and the trainer reads.
//
// Layout of a dataset directory:
//   index.json        {"format": "zerospeed-tokens", "version": 1, "dtype": "uint16"|"uint32",
//                      "vocab_size": V, "eos_id": e, "tokenizer": "...",
//                      "splits": {"train": [{"file", "tokens", "sha256"}...], "val": [...]}}
//   train-00000.bin   raw little-endian token ids; documents separated by eos_id
// Shards are memory-mapped; reading a range may cross shard boundaries. index.json and every
// shard are written atomically and verified (size, and sha256 when asked) on open.
//
// SequenceSampler cuts a split into fixed windows of T+1 tokens (inputs and next-token targets)
// and visits them in a seeded permutation per epoch; its state (epoch, position) is a checkpoint
// field, so a resumed run sees exactly the sequences an uninterrupted run would.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace zs::io {

enum class TokenDType { u16, u32 };

struct ShardInfo {
    std::string file;  // relative to the dataset directory
    int64_t tokens = 0;
    std::string sha256;
};

struct DatasetIndex {
    TokenDType dtype = TokenDType::u16;
    int64_t vocab_size = 0;
    int64_t eos_id = -1;
    std::string tokenizer;
    std::vector<ShardInfo> train, val;
};

// Appends tokens to shards of at most `shard_tokens` tokens; finish() writes index.json.
class TokenShardWriter {
public:
    TokenShardWriter(std::string dir, int64_t vocab_size, int64_t eos_id, std::string tokenizer,
                     int64_t shard_tokens = int64_t{1} << 26);
    ~TokenShardWriter();
    TokenShardWriter(const TokenShardWriter&) = delete;
    TokenShardWriter& operator=(const TokenShardWriter&) = delete;

    // split: "train" or "val"
    void append(const std::string& split, const int32_t* tokens, int64_t n);
    void finish();
    int64_t tokens(const std::string& split) const;

private:
    struct Split;
    void flush(Split& s);
    std::string dir_;
    DatasetIndex index_;
    int64_t shard_tokens_;
    std::unique_ptr<Split> train_, val_;
    bool finished_ = false;
};

class TokenDataset {
public:
    // Opens `dir` (index.json + shards) and the given split. verify_checksums hashes every shard.
    static std::unique_ptr<TokenDataset> open(const std::string& dir, const std::string& split,
                                              bool verify_checksums = false);
    ~TokenDataset();
    int64_t size() const { return total_; }
    const DatasetIndex& index() const { return index_; }
    // Copy tokens [start, start + n) into out (may cross shards). Bounds-checked.
    void read(int64_t start, int64_t n, int32_t* out) const;

private:
    TokenDataset() = default;
    struct Shard;
    DatasetIndex index_;
    std::vector<std::unique_ptr<Shard>> shards_;
    std::vector<int64_t> starts_;  // first token index of each shard
    int64_t total_ = 0;
};

DatasetIndex read_dataset_index(const std::string& dir);

struct SamplerState {
    int64_t epoch = 0;
    int64_t position = 0;  // sequences consumed in this epoch
};

class SequenceSampler {
public:
    // Windows of seq_len + 1 tokens starting every seq_len tokens.
    SequenceSampler(int64_t n_tokens, int64_t seq_len, uint64_t seed, bool shuffle = true);
    int64_t n_sequences() const { return n_seq_; }
    // Index of the next sequence (advances the state; wraps into a new epoch).
    int64_t next();
    // The sequence a given global counter maps to, without changing the state.
    int64_t peek(int64_t ahead) const;
    const SamplerState& state() const { return state_; }
    void set_state(const SamplerState& s);

private:
    int64_t at(int64_t epoch, int64_t pos) const;
    int64_t n_seq_;
    uint64_t seed_;
    bool shuffle_;
    SamplerState state_;
    mutable int64_t cached_epoch_ = -1;
    mutable std::vector<int64_t> perm_;
};

}  // namespace zs::io
