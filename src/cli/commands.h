// The zerospeed subcommands: one options struct and one run function per command. Each returns
// the process exit code; errors in user input are thrown as zs::Error and reported by main.
#pragma once

namespace zs::cli {

struct DoctorOptions {
    int size = 1024;
};
// Print backends, the CPU ISA oneDNN picked, and check/time the core kernels on random data.
int run_doctor(const DoctorOptions& opts);

}  // namespace zs::cli
