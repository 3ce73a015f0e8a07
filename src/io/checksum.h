// SHA-256 checksums (OpenSSL's implementation: SHA-NI where the CPU has it) for the manifests of
// token shards and checkpoints. Hex digests, lowercase.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

namespace zs::io {

class Sha256 {
public:
    Sha256();
    ~Sha256();
    Sha256(const Sha256&) = delete;
    Sha256& operator=(const Sha256&) = delete;
    void update(const void* data, size_t n);
    std::string hex_digest();  // finishes the hash

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

std::string sha256_hex(const void* data, size_t n);
// Hash of a whole file; IoError naming the path when it cannot be read.
std::string sha256_file(const std::string& path);

}  // namespace zs::io
