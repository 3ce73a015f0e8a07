// MmapFile: contents, empty files, copy-on-write, and errors that name the path and OS reason;
// utf8 validation against hand-picked sequences.
#include "io/mmap_file.h"

#include <cstring>

#include <gtest/gtest.h>

#include "base/error.h"
#include "io/test_files_test.h"
#include "io/utf8.h"

namespace zs::io {
namespace {

std::string open_error(const std::string& path) {
    try {
        MmapFile::open(path);
    } catch (const IoError& e) {
        return e.what();
    }
    return "(opened)";
}

TEST(MmapFile, MapsContentsAndIsCopyOnWrite) {
    test::TempDir dir;
    const std::string p = dir.file("f.bin");
    test::write_bytes(p, {1, 2, 3, 4, 5});
    std::shared_ptr<MmapFile> f = MmapFile::open(p);
    ASSERT_EQ(f->size(), 5u);
    EXPECT_EQ(f->data()[4], 5);
    f->cow_data()[0] = 99;
    EXPECT_EQ(f->data()[0], 99);
    EXPECT_EQ(test::read_bytes(p), (std::vector<uint8_t>{1, 2, 3, 4, 5}));

    test::write_bytes(dir.file("empty"), {});
    std::shared_ptr<MmapFile> e = MmapFile::open(dir.file("empty"));
    EXPECT_EQ(e->size(), 0u);
    EXPECT_EQ(e->data(), nullptr);
}

TEST(MmapFile, ErrorsNameThePathAndReason) {
    test::TempDir dir;
    EXPECT_EQ(open_error(dir.file("missing")),
              dir.file("missing") + ": cannot open: No such file or directory");
    EXPECT_EQ(open_error(dir.path()), dir.path() + ": not a regular file (a directory or device?)");
}

TEST(Utf8, StrictLikeRust) {
    EXPECT_TRUE(is_valid_utf8(""));
    EXPECT_TRUE(is_valid_utf8("ascii"));
    EXPECT_TRUE(is_valid_utf8("h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80"));  // é € 😀
    EXPECT_TRUE(is_valid_utf8("\xf4\x8f\xbf\xbf"));                            // U+10FFFF
    EXPECT_EQ(find_invalid_utf8("ab\xff"), 2u);
    EXPECT_EQ(find_invalid_utf8("\xc0\xaf"), 0u);          // overlong '/'
    EXPECT_EQ(find_invalid_utf8("\xe0\x80\xaf"), 0u);      // overlong, 3 bytes
    EXPECT_EQ(find_invalid_utf8("x\xed\xa0\x80"), 1u);     // surrogate U+D800
    EXPECT_EQ(find_invalid_utf8("\xf4\x90\x80\x80"), 0u);  // above U+10FFFF
    EXPECT_EQ(find_invalid_utf8("\xe2\x82"), 0u);          // truncated
    EXPECT_EQ(find_invalid_utf8("\x80"), 0u);              // lone continuation
    EXPECT_EQ(find_invalid_utf8("\xc3\x28"), 0u);          // bad continuation
}

}  // namespace
}  // namespace zs::io
