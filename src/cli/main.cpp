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

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e);
    }
    if (verbose) zs::set_log_level(zs::LogLevel::debug);
    try {
        zs::backends::register_all();
        if (doc->parsed()) return zs::cli::run_doctor(doctor);
        return 0;
    } catch (const zs::Error& e) {
        std::fprintf(stderr, "zerospeed: error: %s\n", e.what());
        return 1;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "zerospeed: internal error: %s\n", e.what());
        return 2;
    }
}
