// zerospeed-run's hostfile and --include/--exclude handling against hand-worked expectations
// (DeepSpeed's documented semantics), and the mpirun / srun commands it plans.
#include "cli/launcher.h"

#include <cstdlib>

#include <gtest/gtest.h>

#include "base/error.h"

namespace zs::cli {
namespace {

const char* kHosts = R"(# two workers
worker-1 slots=4
worker-2 slots=2   # trailing comment

worker-3 slots=1
)";

TEST(Launcher, ParsesDeepSpeedHostfile) {
    auto h = parse_hostfile(kHosts, "hosts");
    ASSERT_EQ(h.size(), 3u);
    EXPECT_EQ(h[0].host, "worker-1");
    EXPECT_EQ(h[0].slots, (std::vector<int>{0, 1, 2, 3}));
    EXPECT_EQ(h[2].slots, (std::vector<int>{0}));
}

TEST(Launcher, MalformedHostfilesAreNamed) {
    for (const char* bad : {"worker-1 slots=x\n", "worker-1\n", "worker-1 slot=2\n",
                            "a slots=1\na slots=2\n", "# only comments\n", "w slots=0\n"}) {
        try {
            parse_hostfile(bad, "hosts");
            ADD_FAILURE() << "accepted: " << bad;
        } catch (const ConfigError& e) {
            EXPECT_NE(std::string(e.what()).find("hosts"), std::string::npos) << e.what();
        }
    }
}

TEST(Launcher, IncludeAndExclude) {
    auto all = parse_hostfile(kHosts, "hosts");
    auto inc = filter_hosts(all, "worker-1:0,2@worker-3", "");
    ASSERT_EQ(inc.size(), 2u);
    EXPECT_EQ(inc[0].slots, (std::vector<int>{0, 2}));
    EXPECT_EQ(inc[1].host, "worker-3");
    auto exc = filter_hosts(all, "", "worker-2@worker-1:1");
    ASSERT_EQ(exc.size(), 2u);
    EXPECT_EQ(exc[0].slots, (std::vector<int>{0, 2, 3}));
    EXPECT_EQ(exc[1].host, "worker-3");
    EXPECT_THROW(filter_hosts(all, "worker-9", ""), ConfigError);
    EXPECT_THROW(filter_hosts(all, "worker-1:7", ""), ConfigError);
    EXPECT_THROW(filter_hosts(all, "worker-1", "worker-2"), ConfigError);
}

TEST(Launcher, PlansMpirunWithWorkerEnvironment) {
    LaunchOptions o;
    o.self_path = "/bin/zerospeed-run";
    o.command = {"zerospeed", "train", "--steps", "3"};
    o.num_procs = 2;
    o.num_nodes = 2;
    LaunchPlan p = plan_launch(o, parse_hostfile(kHosts, "hosts"));
    EXPECT_EQ(p.world_size, 4);  // 2 hosts x 2 ranks
    std::string line;
    for (const std::string& a : p.argv) line += a + " ";
    EXPECT_NE(line.find("mpirun -np 4 --host worker-1:2,worker-2:2"), std::string::npos) << line;
    EXPECT_NE(line.find("/bin/zerospeed-run --worker --master_addr worker-1 --master_port 29500 -- "
                        "zerospeed train --steps 3"),
              std::string::npos)
        << line;
}

std::string joined(const LaunchPlan& p) {
    std::string line;
    for (const std::string& a : p.argv) line += a + " ";
    return line;
}

// OpenMPI 4.x ranks find each other under srun only through PMIx, so the plan asks for it,
// unless SLURM_MPI_TYPE (srun's own default for --mpi) says otherwise.
TEST(Launcher, PlansSrunWithPmix) {
    LaunchOptions o;
    o.self_path = "/bin/zerospeed-run";
    o.command = {"zerospeed", "train"};
    o.num_procs = 2;
    o.use_srun = true;
    const char* saved = std::getenv("SLURM_MPI_TYPE");
    const bool had_saved = saved != nullptr;
    const std::string saved_value = had_saved ? saved : "";
    unsetenv("SLURM_MPI_TYPE");
    std::string line = joined(plan_launch(o, parse_hostfile("localhost slots=4\n", "hosts")));
    EXPECT_EQ(line.rfind("srun --ntasks=2 --kill-on-bad-exit=1 --mpi=pmix /bin/zerospeed-run "
                         "--worker --master_addr localhost --master_port 29500 -- zerospeed train",
                         0),
              0u)
        << line;
    setenv("SLURM_MPI_TYPE", "pmi2", 1);
    line = joined(plan_launch(o, parse_hostfile("localhost slots=4\n", "hosts")));
    EXPECT_EQ(line.find("--mpi"), std::string::npos) << line;
    if (had_saved) {
        setenv("SLURM_MPI_TYPE", saved_value.c_str(), 1);
    } else {
        unsetenv("SLURM_MPI_TYPE");
    }
}

}  // namespace
}  // namespace zs::cli
