#include "io/checksum.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <vector>

#include <openssl/evp.h>

#include "base/error.h"

namespace zs::io {

struct Sha256::Impl {
    EVP_MD_CTX* ctx = nullptr;
};

Sha256::Sha256() : impl_(std::make_unique<Impl>()) {
    impl_->ctx = EVP_MD_CTX_new();
    ZS_ASSERT(impl_->ctx != nullptr && EVP_DigestInit_ex(impl_->ctx, EVP_sha256(), nullptr) == 1);
}

Sha256::~Sha256() { EVP_MD_CTX_free(impl_->ctx); }

void Sha256::update(const void* data, size_t n) {
    ZS_ASSERT(EVP_DigestUpdate(impl_->ctx, data, n) == 1);
}

std::string Sha256::hex_digest() {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    ZS_ASSERT(EVP_DigestFinal_ex(impl_->ctx, md, &len) == 1);
    static const char* kHex = "0123456789abcdef";
    std::string s;
    for (unsigned int i = 0; i < len; ++i) {
        s += kHex[md[i] >> 4];
        s += kHex[md[i] & 15];
    }
    return s;
}

std::string sha256_hex(const void* data, size_t n) {
    Sha256 h;
    h.update(data, n);
    return h.hex_digest();
}

std::string sha256_file(const std::string& path) {
    std::FILE* f = std::fopen(path.c_str(), "rb");
    ZS_CHECK_T(IoError, f != nullptr, "cannot read '{}': {}", path, std::strerror(errno));
    Sha256 h;
    std::vector<unsigned char> buf(1 << 20);
    size_t n;
    while ((n = std::fread(buf.data(), 1, buf.size(), f)) > 0) h.update(buf.data(), n);
    bool err = std::ferror(f) != 0;
    std::fclose(f);
    ZS_CHECK_T(IoError, !err, "error reading '{}'", path);
    return h.hex_digest();
}

}  // namespace zs::io
