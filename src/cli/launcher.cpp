#include "cli/launcher.h"

#include <algorithm>
#include <cstdlib>
#include <sstream>

#include <fmt/format.h>
#include <unistd.h>

#include "base/error.h"

namespace zs::cli {

std::vector<HostSlots> parse_hostfile(const std::string& text, const std::string& source) {
    std::vector<HostSlots> hosts;
    std::istringstream in(text);
    std::string line;
    int n = 0;
    while (std::getline(in, line)) {
        ++n;
        auto hash = line.find('#');
        if (hash != std::string::npos) line.resize(hash);
        std::istringstream ls(line);
        std::string host, slots;
        if (!(ls >> host)) continue;
        ZS_CHECK_T(ConfigError, static_cast<bool>(ls >> slots) && slots.rfind("slots=", 0) == 0,
                   "{}:{}: expected 'hostname slots=N', got '{}'", source, n, line);
        int count = 0;
        try {
            count = std::stoi(slots.substr(6));
        } catch (const std::exception&) {
            count = -1;
        }
        ZS_CHECK_T(ConfigError, count > 0, "{}:{}: slots must be a positive integer, got '{}'",
                   source, n, slots.substr(6));
        for (const HostSlots& h : hosts) {
            ZS_CHECK_T(ConfigError, h.host != host, "{}:{}: host '{}' is listed twice", source, n,
                       host);
        }
        HostSlots h{host, {}};
        for (int i = 0; i < count; ++i) h.slots.push_back(i);
        hosts.push_back(h);
    }
    ZS_CHECK_T(ConfigError, !hosts.empty(), "{}: no hosts", source);
    return hosts;
}

namespace {

// "node1@node2:0,2" -> {node1: all, node2: {0, 2}}
std::vector<HostSlots> parse_filter(const std::string& spec, const char* flag) {
    std::vector<HostSlots> out;
    std::istringstream in(spec);
    std::string part;
    while (std::getline(in, part, '@')) {
        ZS_CHECK_T(ConfigError, !part.empty(), "{} '{}': empty host entry", flag, spec);
        HostSlots h;
        auto colon = part.find(':');
        h.host = part.substr(0, colon);
        if (colon != std::string::npos) {
            std::istringstream ss(part.substr(colon + 1));
            std::string s;
            while (std::getline(ss, s, ',')) {
                try {
                    h.slots.push_back(std::stoi(s));
                } catch (const std::exception&) {
                    ZS_THROW(ConfigError, "{} '{}': slot '{}' is not a number", flag, spec, s);
                }
            }
        }
        out.push_back(h);
    }
    return out;
}

}  // namespace

std::vector<HostSlots> filter_hosts(std::vector<HostSlots> hosts, const std::string& include,
                                    const std::string& exclude) {
    ZS_CHECK_T(ConfigError, include.empty() || exclude.empty(),
               "--include and --exclude cannot both be given");
    auto find = [&](const std::string& name) {
        auto it = std::find_if(hosts.begin(), hosts.end(),
                               [&](const HostSlots& h) { return h.host == name; });
        ZS_CHECK_T(ConfigError, it != hosts.end(), "host '{}' is not in the hostfile", name);
        return it;
    };
    if (!include.empty()) {
        std::vector<HostSlots> out;
        for (const HostSlots& f : parse_filter(include, "--include")) {
            auto it = find(f.host);
            HostSlots h{f.host, f.slots.empty() ? it->slots : f.slots};
            for (int s : h.slots) {
                ZS_CHECK_T(ConfigError,
                           std::find(it->slots.begin(), it->slots.end(), s) != it->slots.end(),
                           "--include: host '{}' has no slot {}", f.host, s);
            }
            out.push_back(h);
        }
        return out;
    }
    if (!exclude.empty()) {
        for (const HostSlots& f : parse_filter(exclude, "--exclude")) {
            auto it = find(f.host);
            if (f.slots.empty()) {
                hosts.erase(it);
            } else {
                for (int s : f.slots)
                    it->slots.erase(std::remove(it->slots.begin(), it->slots.end(), s),
                                    it->slots.end());
            }
        }
        hosts.erase(std::remove_if(hosts.begin(), hosts.end(),
                                   [](const HostSlots& h) { return h.slots.empty(); }),
                    hosts.end());
    }
    return hosts;
}

LaunchPlan plan_launch(const LaunchOptions& o, std::vector<HostSlots> hosts) {
    if (o.num_nodes > 0 && static_cast<int>(hosts.size()) > o.num_nodes)
        hosts.resize(static_cast<size_t>(o.num_nodes));
    if (o.num_procs > 0) {
        for (HostSlots& h : hosts) {
            if (static_cast<int>(h.slots.size()) > o.num_procs)
                h.slots.resize(static_cast<size_t>(o.num_procs));
        }
    }
    LaunchPlan p;
    for (const HostSlots& h : hosts) p.world_size += static_cast<int>(h.slots.size());
    ZS_CHECK_T(ConfigError, p.world_size > 0, "no ranks to launch");
    ZS_CHECK_T(ConfigError, !o.command.empty(),
               "no program to run (zerospeed-run [options] PROGRAM ARGS...)");
    std::string master = o.master_addr.empty() ? hosts.front().host : o.master_addr;
    std::string host_list;
    for (const HostSlots& h : hosts)
        host_list += fmt::format("{}{}:{}", host_list.empty() ? "" : ",", h.host, h.slots.size());
    if (o.use_srun) {
        p.argv = {"srun", fmt::format("--ntasks={}", p.world_size), "--kill-on-bad-exit=1"};
        // NOTE(launcher): OpenMPI 4.x joins an srun launch only through PMIx (Debian's build has
        // no PMI2 client); under srun's usual default, --mpi=none, every rank would start alone as
        // a world of 1. SLURM_MPI_TYPE is srun's own variable for --mpi: a site that sets it wins.
        if (std::getenv("SLURM_MPI_TYPE") == nullptr) p.argv.push_back("--mpi=pmix");
    } else {
        p.argv = {"mpirun",
                  "-np",
                  std::to_string(p.world_size),
                  "--host",
                  host_list,
                  "--bind-to",
                  "none",
                  "--oversubscribe",
                  "--tag-output"};
        if (getuid() == 0) p.argv.push_back("--allow-run-as-root");
        // The transports' settings (comm/README.md) too: remote ranks do not inherit them.
        for (const char* v :
             {"PATH", "LD_LIBRARY_PATH", "OMP_NUM_THREADS", "ZS_FAULT", "ZS_FAULT_RANK", "ZS_CACHE",
              "HOME", "ZS_SHM", "ZS_SHM_SLOT_KIB", "ZS_SHM_SPIN_US", "ZS_SHM_INLINE_KIB",
              "ZS_SIMULATE_HOSTS", "ZS_HIERARCHICAL"}) {
            if (std::getenv(v) == nullptr) continue;
            p.argv.push_back("-x");
            p.argv.push_back(v);
        }
    }
    p.argv.insert(p.argv.end(), {o.self_path, "--worker", "--master_addr", master, "--master_port",
                                 std::to_string(o.master_port), "--"});
    p.argv.insert(p.argv.end(), o.command.begin(), o.command.end());
    return p;
}

}  // namespace zs::cli
