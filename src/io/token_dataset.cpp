#include "io/token_dataset.h"

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <numeric>
#include <random>

#include <fcntl.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/error.h"
#include "io/atomic_file.h"
#include "io/checksum.h"
#include "io/json.h"

namespace zs::io {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

size_t token_bytes(TokenDType t) { return t == TokenDType::u16 ? 2 : 4; }
const char* dtype_name(TokenDType t) { return t == TokenDType::u16 ? "uint16" : "uint32"; }

std::vector<ShardInfo> parse_shards(const json& j, const std::string& where) {
    std::vector<ShardInfo> v;
    if (j.is_null()) return v;
    ZS_CHECK_T(IoError, j.is_array(), "{}: expected a list of shards", where);
    for (const json& e : j) {
        ZS_CHECK_T(IoError,
                   e.is_object() && e.contains("file") && e["file"].is_string() &&
                       e.contains("tokens") && e["tokens"].is_number_integer(),
                   "{}: each shard needs 'file' (string) and 'tokens' (integer)", where);
        ShardInfo s{e["file"].get<std::string>(), e["tokens"].get<int64_t>(),
                    e.value("sha256", std::string())};
        ZS_CHECK_T(IoError,
                   s.tokens >= 0 && s.file.find('/') == std::string::npos && s.file != "..",
                   "{}: bad shard entry '{}'", where, s.file);
        v.push_back(std::move(s));
    }
    return v;
}

}  // namespace

DatasetIndex read_dataset_index(const std::string& dir) {
    std::string path = dir + "/index.json";
    std::string text = read_file(path);
    json j = parse_json(text, path);
    ZS_CHECK_T(IoError, j.is_object() && j.value("format", "") == "zerospeed-tokens",
               "{}: not a zerospeed token dataset index (format != \"zerospeed-tokens\")", path);
    DatasetIndex idx;
    std::string dt = j.value("dtype", "");
    ZS_CHECK_T(IoError, dt == "uint16" || dt == "uint32",
               "{}: dtype '{}' (expected uint16 or uint32)", path, dt);
    idx.dtype = dt == "uint16" ? TokenDType::u16 : TokenDType::u32;
    ZS_CHECK_T(IoError, j.contains("vocab_size") && j["vocab_size"].is_number_integer(),
               "{}: missing integer 'vocab_size'", path);
    idx.vocab_size = j["vocab_size"].get<int64_t>();
    idx.eos_id = j.value("eos_id", int64_t{-1});
    idx.tokenizer = j.value("tokenizer", std::string());
    ZS_CHECK_T(IoError, j.contains("splits") && j["splits"].is_object(), "{}: missing 'splits'",
               path);
    idx.train = parse_shards(j["splits"].value("train", json()), path + ": splits.train");
    idx.val = parse_shards(j["splits"].value("val", json()), path + ": splits.val");
    return idx;
}

// ------------------------------------------------------------------------------------- writer

struct TokenShardWriter::Split {
    std::string name;
    std::vector<ShardInfo>* shards;
    std::vector<unsigned char> buf;  // current shard's bytes
    int64_t buf_tokens = 0;
    int64_t total = 0;
};

TokenShardWriter::TokenShardWriter(std::string dir, int64_t vocab_size, int64_t eos_id,
                                   std::string tokenizer, int64_t shard_tokens)
    : dir_(std::move(dir)), shard_tokens_(shard_tokens) {
    fs::create_directories(dir_);
    index_.dtype = vocab_size <= 65536 ? TokenDType::u16 : TokenDType::u32;
    index_.vocab_size = vocab_size;
    index_.eos_id = eos_id;
    index_.tokenizer = std::move(tokenizer);
    train_ = std::make_unique<Split>(Split{"train", &index_.train, {}, 0, 0});
    val_ = std::make_unique<Split>(Split{"val", &index_.val, {}, 0, 0});
}

TokenShardWriter::~TokenShardWriter() = default;

void TokenShardWriter::append(const std::string& split, const int32_t* tokens, int64_t n) {
    ZS_ASSERT(!finished_);
    ZS_CHECK(split == "train" || split == "val", "unknown split '{}'", split);
    Split& s = split == "train" ? *train_ : *val_;
    size_t tb = token_bytes(index_.dtype);
    for (int64_t i = 0; i < n; ++i) {
        int32_t t = tokens[i];
        ZS_CHECK(t >= 0 && t < index_.vocab_size, "token id {} outside the vocabulary [0, {})", t,
                 index_.vocab_size);
        auto u = static_cast<uint32_t>(t);
        unsigned char b[4] = {static_cast<unsigned char>(u), static_cast<unsigned char>(u >> 8),
                              static_cast<unsigned char>(u >> 16),
                              static_cast<unsigned char>(u >> 24)};
        s.buf.insert(s.buf.end(), b, b + tb);
        if (++s.buf_tokens == shard_tokens_) flush(s);
    }
    s.total += n;
}

void TokenShardWriter::flush(Split& s) {
    if (s.buf_tokens == 0) return;
    std::string file = fmt::format("{}-{:05d}.bin", s.name, s.shards->size());
    write_file_atomic(dir_ + "/" + file,
                      std::string_view(reinterpret_cast<const char*>(s.buf.data()), s.buf.size()));
    s.shards->push_back({file, s.buf_tokens, sha256_hex(s.buf.data(), s.buf.size())});
    s.buf.clear();
    s.buf_tokens = 0;
}

void TokenShardWriter::finish() {
    if (finished_) return;
    flush(*train_);
    flush(*val_);
    json j;
    j["format"] = "zerospeed-tokens";
    j["version"] = 1;
    j["dtype"] = dtype_name(index_.dtype);
    j["vocab_size"] = index_.vocab_size;
    j["eos_id"] = index_.eos_id;
    j["tokenizer"] = index_.tokenizer;
    auto shards = [](const std::vector<ShardInfo>& v) {
        json a = json::array();
        for (const ShardInfo& s : v)
            a.push_back({{"file", s.file}, {"tokens", s.tokens}, {"sha256", s.sha256}});
        return a;
    };
    j["splits"] = {{"train", shards(index_.train)}, {"val", shards(index_.val)}};
    write_file_atomic(dir_ + "/index.json", j.dump(2) + "\n");
    finished_ = true;
}

int64_t TokenShardWriter::tokens(const std::string& split) const {
    return split == "train" ? train_->total : val_->total;
}

// ------------------------------------------------------------------------------------- reader

struct TokenDataset::Shard {
    void* map = MAP_FAILED;
    size_t bytes = 0;
    int64_t tokens = 0;
    ~Shard() {
        if (map != MAP_FAILED && bytes > 0) munmap(map, bytes);
    }
};

TokenDataset::~TokenDataset() = default;

std::unique_ptr<TokenDataset> TokenDataset::open(const std::string& dir, const std::string& split,
                                                 bool verify_checksums) {
    std::unique_ptr<TokenDataset> ds(new TokenDataset());
    ds->index_ = read_dataset_index(dir);
    ZS_CHECK_T(IoError, split == "train" || split == "val", "unknown split '{}' (train or val)",
               split);
    const auto& shards = split == "train" ? ds->index_.train : ds->index_.val;
    size_t tb = token_bytes(ds->index_.dtype);
    for (const ShardInfo& si : shards) {
        std::string path = dir + "/" + si.file;
        int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
        ZS_CHECK_T(IoError, fd >= 0, "{}: cannot open shard '{}': {}", dir, si.file,
                   std::strerror(errno));
        struct stat st {};
        ::fstat(fd, &st);
        auto sh = std::make_unique<Shard>();
        sh->bytes = static_cast<size_t>(st.st_size);
        sh->tokens = si.tokens;
        if (sh->bytes != static_cast<size_t>(si.tokens) * tb) {
            ::close(fd);
            ZS_THROW(IoError, "{}: shard '{}' has {} bytes; index.json says {} tokens of {} bytes",
                     dir, si.file, sh->bytes, si.tokens, tb);
        }
        if (sh->bytes > 0) {
            sh->map = mmap(nullptr, sh->bytes, PROT_READ, MAP_PRIVATE, fd, 0);
        }
        ::close(fd);
        ZS_CHECK_T(IoError, sh->bytes == 0 || sh->map != MAP_FAILED, "{}: cannot map shard '{}'",
                   dir, si.file);
        if (verify_checksums && !si.sha256.empty()) {
            std::string h = sha256_hex(sh->map == MAP_FAILED ? nullptr : sh->map, sh->bytes);
            ZS_CHECK_T(IoError, h == si.sha256,
                       "{}: shard '{}' is corrupt: sha256 {} but index.json expects {}", dir,
                       si.file, h, si.sha256);
        }
        ds->starts_.push_back(ds->total_);
        ds->total_ += si.tokens;
        ds->shards_.push_back(std::move(sh));
    }
    return ds;
}

void TokenDataset::read(int64_t start, int64_t n, int32_t* out) const {
    ZS_CHECK(start >= 0 && n >= 0 && start + n <= total_,
             "token range [{}, {}) outside the split of {}", start, start + n, total_);
    size_t tb = token_bytes(index_.dtype);
    auto it = std::upper_bound(starts_.begin(), starts_.end(), start);
    auto s = static_cast<size_t>(it - starts_.begin() - 1);
    while (n > 0) {
        const Shard& sh = *shards_[s];
        int64_t off = start - starts_[s];
        int64_t take = std::min(n, sh.tokens - off);
        const auto* p = static_cast<const unsigned char*>(sh.map) + static_cast<size_t>(off) * tb;
        for (int64_t i = 0; i < take; ++i) {
            uint32_t v = p[i * tb] | (static_cast<uint32_t>(p[i * tb + 1]) << 8);
            if (tb == 4)
                v |= (static_cast<uint32_t>(p[i * tb + 2]) << 16) |
                     (static_cast<uint32_t>(p[i * tb + 3]) << 24);
            ZS_CHECK_T(IoError, static_cast<int64_t>(v) < index_.vocab_size,
                       "token dataset: id {} at position {} exceeds vocab_size {}", v, start + i,
                       index_.vocab_size);
            out[i] = static_cast<int32_t>(v);
        }
        out += take;
        start += take;
        n -= take;
        ++s;
    }
}

// ------------------------------------------------------------------------------------ sampler

SequenceSampler::SequenceSampler(int64_t n_tokens, int64_t seq_len, uint64_t seed, bool shuffle)
    : n_seq_(n_tokens > seq_len ? (n_tokens - 1) / seq_len : 0), seed_(seed), shuffle_(shuffle) {
    ZS_CHECK(n_seq_ > 0, "dataset of {} tokens holds no sequence of {} + 1 tokens", n_tokens,
             seq_len);
}

int64_t SequenceSampler::at(int64_t epoch, int64_t pos) const {
    if (!shuffle_) return pos;
    if (cached_epoch_ != epoch) {
        perm_.resize(static_cast<size_t>(n_seq_));
        std::iota(perm_.begin(), perm_.end(), 0);
        // A fixed, documented shuffle (Fisher-Yates with mt19937_64) so runs are reproducible
        // across builds: std::shuffle's algorithm is unspecified.
        std::mt19937_64 g(seed_ ^ (0x9e3779b97f4a7c15ull * static_cast<uint64_t>(epoch + 1)));
        for (int64_t i = n_seq_ - 1; i > 0; --i) {
            auto j = static_cast<int64_t>(g() % static_cast<uint64_t>(i + 1));
            std::swap(perm_[static_cast<size_t>(i)], perm_[static_cast<size_t>(j)]);
        }
        cached_epoch_ = epoch;
    }
    return perm_[static_cast<size_t>(pos)];
}

int64_t SequenceSampler::next() {
    int64_t r = at(state_.epoch, state_.position);
    if (++state_.position == n_seq_) {
        state_.position = 0;
        ++state_.epoch;
    }
    return r;
}

int64_t SequenceSampler::peek(int64_t ahead) const {
    int64_t abs = state_.epoch * n_seq_ + state_.position + ahead;
    return at(abs / n_seq_, abs % n_seq_);
}

void SequenceSampler::set_state(const SamplerState& s) {
    ZS_CHECK(s.epoch >= 0 && s.position >= 0 && s.position < n_seq_,
             "sampler state (epoch {}, position {}) does not fit a dataset of {} sequences",
             s.epoch, s.position, n_seq_);
    state_ = s;
}

}  // namespace zs::io
