// The zerospeed subcommands: one options struct and one run function per command. Each returns
// the process exit code; errors in user input are thrown as zs::Error and reported by main.
#pragma once

#include <string>

namespace zs::cli {

struct DoctorOptions {
    int size = 1024;
};
// Print backends, the CPU ISA oneDNN picked, and check/time the core kernels on random data.
int run_doctor(const DoctorOptions& opts);

struct TokenizeOptions {
    std::string tokenizer;      // file or directory (io::Tokenizer::load)
    std::string pattern;        // pre-tokenizer regex for an unknown *.tiktoken file
    bool add_special = false;   // bos/eos as the tokenizer asks
    bool decode = false;        // ids (JSON array) -> text instead of text -> ids
    bool skip_special = false;  // with --decode: drop special tokens
};
// Text on stdin -> JSON array of ids on stdout (or the reverse with --decode).
int run_tokenize(const TokenizeOptions& opts);

}  // namespace zs::cli
