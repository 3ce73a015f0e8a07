// zerospeed-run: DeepSpeed's launcher flags on top of mpirun (or srun under Slurm).
//
//   zerospeed-run --num_procs 2 zerospeed train --ds-config ds.json ...
//   zerospeed-run --hostfile hosts --include "node1@node2:0,2" zerospeed train ...
//
// Hostfile: DeepSpeed's format, one "hostname slots=N" per line, '#' comments. --include/
// --exclude: "host[:slot,slot][@host...]". --num_nodes N takes the first N hosts; --num_procs
// (alias --num_gpus) caps the slots used per host. Each rank runs through `zerospeed-run
// --worker`, which sets RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_SIZE, MASTER_ADDR, MASTER_PORT and
// OMP_NUM_THREADS (cores / ranks on the host, unless set) before exec'ing the program.
#pragma once

#include <string>
#include <vector>

namespace zs::cli {

struct HostSlots {
    std::string host;
    std::vector<int> slots;  // slot indices in use on this host
};

// Parse a DeepSpeed hostfile; ConfigError naming the file and line on a malformed entry.
std::vector<HostSlots> parse_hostfile(const std::string& text, const std::string& source);
// Apply --include / --exclude filters (DeepSpeed syntax). Either may be empty; not both set.
std::vector<HostSlots> filter_hosts(std::vector<HostSlots> hosts, const std::string& include,
                                    const std::string& exclude);

struct LaunchPlan {
    std::vector<std::string> argv;  // the mpirun / srun command line
    int world_size = 0;
};

struct LaunchOptions {
    std::string hostfile;
    std::string include, exclude;
    int num_nodes = -1;
    int num_procs = -1;
    std::string master_addr;
    int master_port = 29500;
    std::string self_path;  // this executable (for --worker)
    std::vector<std::string> command;
    bool use_srun = false;
};

LaunchPlan plan_launch(const LaunchOptions& o, std::vector<HostSlots> hosts);

}  // namespace zs::cli
