// Token shards round trip across shard boundaries; corrupt/truncated shards are named errors;
// the sampler is a permutation per epoch, deterministic, and resumable mid-epoch.
#include "io/token_dataset.h"

#include <filesystem>
#include <fstream>
#include <set>

#include <gtest/gtest.h>

#include "base/error.h"
#include "io/atomic_file.h"
#include "io/checksum.h"

namespace zs::io {
namespace {

std::string temp_dir(const std::string& name) {
    auto d =
        std::filesystem::temp_directory_path() / ("zs_" + name + "_" + std::to_string(getpid()));
    std::filesystem::remove_all(d);
    std::filesystem::create_directories(d);
    return d.string();
}

TEST(TokenDataset, RoundTripAcrossShards) {
    for (int64_t vocab : {int64_t{1000}, int64_t{100000}}) {
        std::string dir = temp_dir("tokens" + std::to_string(vocab));
        std::vector<int32_t> train(1000), val(37);
        for (size_t i = 0; i < train.size(); ++i)
            train[i] = static_cast<int32_t>((i * 7919) % vocab);
        for (size_t i = 0; i < val.size(); ++i) val[i] = static_cast<int32_t>(i);
        {
            TokenShardWriter w(dir, vocab, 0, "test", 300);
            w.append("train", train.data(), 500);
            w.append("train", train.data() + 500, 500);
            w.append("val", val.data(), 37);
            w.finish();
        }
        auto idx = read_dataset_index(dir);
        EXPECT_EQ(idx.train.size(), 4u);  // 300 + 300 + 300 + 100
        EXPECT_EQ(idx.dtype, vocab <= 65536 ? TokenDType::u16 : TokenDType::u32);
        auto ds = TokenDataset::open(dir, "train", true);
        ASSERT_EQ(ds->size(), 1000);
        std::vector<int32_t> got(1000);
        ds->read(0, 1000, got.data());
        EXPECT_EQ(got, train);
        std::vector<int32_t> mid(450);
        ds->read(250, 450, mid.data());  // crosses two boundaries
        EXPECT_TRUE(std::equal(mid.begin(), mid.end(), train.begin() + 250));
        EXPECT_THROW(ds->read(900, 101, got.data()), zs::Error);
        EXPECT_EQ(TokenDataset::open(dir, "val")->size(), 37);
    }
}

TEST(TokenDataset, CorruptShardsAreNamed) {
    std::string dir = temp_dir("corrupt");
    std::vector<int32_t> t(100, 5);
    {
        TokenShardWriter w(dir, 50, 0, "test");
        w.append("train", t.data(), 100);
        w.finish();
    }
    {
        std::fstream f(dir + "/train-00000.bin", std::ios::in | std::ios::out | std::ios::binary);
        f.seekp(10);
        f.put('\x7f');
    }
    try {
        TokenDataset::open(dir, "train", true);
        FAIL();
    } catch (const zs::IoError& e) {
        EXPECT_NE(std::string(e.what()).find("train-00000.bin' is corrupt"), std::string::npos)
            << e.what();
    }
    std::filesystem::resize_file(dir + "/train-00000.bin", 150);
    EXPECT_THROW(TokenDataset::open(dir, "train"), zs::IoError);
    write_file_atomic(dir + "/index.json", "{\"format\": \"other\"}");
    EXPECT_THROW(TokenDataset::open(dir, "train"), zs::IoError);
}

TEST(Sampler, PermutationPerEpochDeterministicAndResumable) {
    SequenceSampler a(1001, 10, 42), b(1001, 10, 42), c(1001, 10, 43);
    EXPECT_EQ(a.n_sequences(), 100);
    std::set<int64_t> seen;
    std::vector<int64_t> first;
    for (int i = 0; i < 100; ++i) {
        int64_t s = a.next();
        seen.insert(s);
        first.push_back(s);
        EXPECT_EQ(s, b.next());
    }
    EXPECT_EQ(seen.size(), 100u);  // a permutation
    EXPECT_EQ(a.state().epoch, 1);
    std::vector<int64_t> cseq;
    for (int i = 0; i < 100; ++i) cseq.push_back(c.next());
    EXPECT_NE(cseq, first);  // another seed, another order
    // Resume mid-epoch: a fresh sampler set to a's state continues identically.
    for (int i = 0; i < 37; ++i) a.next();
    SequenceSampler r(1001, 10, 42);
    r.set_state(a.state());
    EXPECT_EQ(r.peek(0), a.peek(0));
    for (int i = 0; i < 250; ++i) EXPECT_EQ(r.next(), a.next());
    EXPECT_THROW(r.set_state({0, 100}), zs::Error);
}

TEST(Checksum, KnownVectors) {
    // FIPS 180-2 test vectors.
    EXPECT_EQ(sha256_hex("abc", 3),
              "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    EXPECT_EQ(sha256_hex("", 0),
              "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST(AtomicFile, UncommittedLeavesOldContents) {
    std::string dir = temp_dir("atomic");
    write_file_atomic(dir + "/f", "old");
    {
        AtomicFile f(dir + "/f");
        f.write("new", 3);
        // destroyed without commit
    }
    EXPECT_EQ(read_file(dir + "/f"), "old");
    size_t n = 0;
    for (auto& e : std::filesystem::directory_iterator(dir)) n += e.is_regular_file();
    EXPECT_EQ(n, 1u);  // the temporary is gone
}

}  // namespace
}  // namespace zs::io
