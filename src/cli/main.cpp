// zerospeed: the command-line entry point. Parses flags (CLI11), builds what a command needs and
// runs it. zs::Error is caught here: its message goes to stderr and the exit code is 1.
#include <cstdio>
#include <exception>
#include <string>

#include <CLI/CLI.hpp>

#include "backends/register.h"
#include "base/error.h"
#include "base/log.h"
#include "cli/commands.h"

int main(int argc, char** argv) {
    CLI::App app{"zerospeed: DeepSpeed's training and serving system as one native C++ engine"};
    app.require_subcommand(1);
    app.set_version_flag("--version", "zerospeed 0.1.0");
    bool verbose = false;
    app.add_flag("-v,--verbose", verbose, "Debug logging");

    zs::cli::DoctorOptions doctor;
    CLI::App* doc = app.add_subcommand("doctor", "Check this machine's backends and kernels");
    doc->add_option("--size", doctor.size, "Square GEMM size for the throughput check")
        ->check(CLI::Range(16, 8192));

    zs::cli::TokenizeOptions tokenize;
    CLI::App* tkn = app.add_subcommand(
        "tokenize", "Encode stdin text to token ids (JSON), or --decode a JSON id array to text");
    tkn->add_option("--tokenizer", tokenize.tokenizer,
                    "tokenizer.json / tokenizer.model / *.tiktoken file, or a model directory")
        ->required();
    tkn->add_flag("--add-special", tokenize.add_special, "Add bos/eos as the tokenizer asks");
    tkn->add_flag("--decode", tokenize.decode, "Read a JSON array of ids, print the text");
    tkn->add_flag("--skip-special", tokenize.skip_special, "With --decode: drop special tokens");
    tkn->add_option("--pattern", tokenize.pattern,
                    "Pre-tokenizer regex for a *.tiktoken file other than r50k/p50k/cl100k_base");

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e);
    }
    if (verbose) zs::set_log_level(zs::LogLevel::debug);
    try {
        zs::backends::register_all();
        if (doc->parsed()) return zs::cli::run_doctor(doctor);
        if (tkn->parsed()) return zs::cli::run_tokenize(tokenize);
        return 0;
    } catch (const zs::Error& e) {
        std::fprintf(stderr, "zerospeed: error: %s\n", e.what());
        return 1;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "zerospeed: internal error: %s\n", e.what());
        return 2;
    }
}
