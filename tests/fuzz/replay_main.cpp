// Runs a libFuzzer target's LLVMFuzzerTestOneInput over every file of the corpus folders given
// on the command line, so ordinary (gcc, ASan) builds replay the seeds and past crash inputs as
// a regression test without libFuzzer.
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

int main(int argc, char** argv) {
    int n = 0;
    for (int i = 1; i < argc; ++i) {
        std::vector<std::filesystem::path> files;
        for (const auto& e : std::filesystem::recursive_directory_iterator(argv[i])) {
            if (e.is_regular_file()) files.push_back(e.path());
        }
        for (const auto& p : files) {
            std::ifstream f(p, std::ios::binary);
            std::vector<uint8_t> bytes{std::istreambuf_iterator<char>(f),
                                       std::istreambuf_iterator<char>()};
            LLVMFuzzerTestOneInput(bytes.data(), bytes.size());
            ++n;
        }
    }
    std::printf("replayed %d inputs\n", n);
    return n > 0 ? 0 : 1;
}
