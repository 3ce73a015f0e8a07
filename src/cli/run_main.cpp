// zerospeed-run: the multi-process launcher (DeepSpeed's `deepspeed` command, over mpirun or
// srun). See cli/launcher.h for the flags. mpirun stops every rank when one fails.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>

#include <CLI/CLI.hpp>
#include <sys/wait.h>
#include <unistd.h>

#include "base/error.h"
#include "cli/launcher.h"

namespace {

std::string env_or(const char* a, const char* b, const char* def) {
    if (const char* v = std::getenv(a)) return v;
    if (b != nullptr) {
        if (const char* v = std::getenv(b)) return v;
    }
    return def;
}

// Ranks of this srun step on this node. SLURM_NTASKS_PER_NODE is set only when the user asked
// for it, so read the step's layout: SLURM_STEP_TASKS_PER_NODE in srun's compressed form,
// "4(x2),3" = 4 tasks on nodes 0 and 1, 3 on node 2, indexed by SLURM_NODEID. "1" outside srun.
std::string slurm_step_tasks_here() {
    const char* layout = std::getenv("SLURM_STEP_TASKS_PER_NODE");
    const char* node = std::getenv("SLURM_NODEID");
    if (layout == nullptr || node == nullptr) return "1";
    int skip = std::atoi(node);
    std::istringstream in(layout);
    std::string group;
    while (std::getline(in, group, ',')) {
        auto times = group.find("(x");
        int repeat = times == std::string::npos ? 1 : std::atoi(group.c_str() + times + 2);
        if (skip < repeat) return std::to_string(std::max(1, std::atoi(group.c_str())));
        skip -= repeat;
    }
    return "1";
}

// Inside each rank: DeepSpeed's environment, a fair share of the cores, then exec.
int worker(const std::string& master_addr, int master_port, std::vector<std::string> cmd) {
    std::string rank = env_or("OMPI_COMM_WORLD_RANK", "SLURM_PROCID", "0");
    std::string local = env_or("OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "0");
    std::string world = env_or("OMPI_COMM_WORLD_SIZE", "SLURM_NTASKS", "1");
    std::string local_size = env_or("OMPI_COMM_WORLD_LOCAL_SIZE", nullptr, "");
    if (local_size.empty()) local_size = slurm_step_tasks_here();
    setenv("RANK", rank.c_str(), 1);
    setenv("LOCAL_RANK", local.c_str(), 1);
    setenv("WORLD_SIZE", world.c_str(), 1);
    setenv("LOCAL_SIZE", local_size.c_str(), 1);
    setenv("MASTER_ADDR", master_addr.c_str(), 1);
    setenv("MASTER_PORT", std::to_string(master_port).c_str(), 1);
    if (std::getenv("OMP_NUM_THREADS") == nullptr) {
        unsigned cores = std::max(1u, std::thread::hardware_concurrency());
        int per = std::max(1, static_cast<int>(cores) / std::max(1, std::atoi(local_size.c_str())));
        setenv("OMP_NUM_THREADS", std::to_string(per).c_str(), 1);
    }
    std::vector<char*> argv;
    for (std::string& s : cmd) argv.push_back(s.data());
    argv.push_back(nullptr);
    execvp(argv[0], argv.data());
    std::fprintf(stderr, "zerospeed-run: cannot execute '%s'\n", argv[0]);
    return 127;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{
        "zerospeed-run: launch a program on N ranks (DeepSpeed launcher flags, over mpirun/srun)"};
    zs::cli::LaunchOptions o;
    bool is_worker = false, dry_run = false;
    app.add_option("--hostfile,-H", o.hostfile, "DeepSpeed hostfile (host slots=N)");
    app.add_option("--include,-i", o.include, "Hosts/slots to use, e.g. node1@node2:0,2");
    app.add_option("--exclude,-e", o.exclude, "Hosts/slots to leave out");
    app.add_option("--num_nodes", o.num_nodes, "Use the first N hosts");
    app.add_option("--num_procs,--num_gpus", o.num_procs, "Ranks per host");
    app.add_option("--master_addr", o.master_addr, "Address of rank 0");
    app.add_option("--master_port", o.master_port, "Port for rendezvous");
    app.add_flag("--srun", o.use_srun, "Launch with srun (default under Slurm)");
    app.add_flag("--dry-run", dry_run, "Print the launch command only");
    app.add_flag("--worker", is_worker, "(internal) run one rank");
    // Everything from the first positional argument on is the program and its own flags.
    app.prefix_command();
    app.footer("Usage: zerospeed-run [options] PROGRAM [ARGS...]");
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e);
    }
    o.command = app.remaining();
    if (!o.command.empty() && o.command.front() == "--") o.command.erase(o.command.begin());
    if (is_worker) return worker(o.master_addr, o.master_port, o.command);
    try {
        std::vector<zs::cli::HostSlots> hosts;
        if (!o.hostfile.empty()) {
            std::ifstream in(o.hostfile);
            ZS_CHECK_T(zs::IoError, in.good(), "cannot read hostfile '{}'", o.hostfile);
            std::stringstream ss;
            ss << in.rdbuf();
            hosts = zs::cli::parse_hostfile(ss.str(), o.hostfile);
        } else {
            zs::cli::HostSlots h{"localhost", {}};
            int n = o.num_procs > 0 ? o.num_procs : 1;
            for (int i = 0; i < n; ++i) h.slots.push_back(i);
            hosts.push_back(h);
        }
        hosts = zs::cli::filter_hosts(hosts, o.include, o.exclude);
        if (std::getenv("SLURM_JOB_ID") != nullptr && o.hostfile.empty()) o.use_srun = true;
        char self[4096];
        ssize_t len = readlink("/proc/self/exe", self, sizeof(self) - 1);
        o.self_path = len > 0 ? std::string(self, static_cast<size_t>(len)) : std::string(argv[0]);
        zs::cli::LaunchPlan plan = zs::cli::plan_launch(o, hosts);
        std::string line;
        for (const std::string& a : plan.argv) line += (line.empty() ? "" : " ") + a;
        std::fprintf(stderr, "zerospeed-run: %d rank(s): %s\n", plan.world_size, line.c_str());
        if (dry_run) return 0;
        std::vector<char*> args;
        for (std::string& s : plan.argv) args.push_back(s.data());
        args.push_back(nullptr);
        execvp(args[0], args.data());
        ZS_THROW(zs::Error, "cannot execute '{}' (install OpenMPI: openmpi-bin)", plan.argv[0]);
    } catch (const zs::Error& e) {
        std::fprintf(stderr, "zerospeed-run: error: %s\n", e.what());
        return 1;
    }
}
