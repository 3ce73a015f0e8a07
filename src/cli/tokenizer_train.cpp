// `zerospeed tokenizer train`: a byte-level BPE tokenizer trained on text files, written as a
// Hugging Face tokenizer.json (io/bpe_trainer.h).
#include <filesystem>

#include "base/error.h"
#include "base/log.h"
#include "base/progress.h"
#include "cli/commands.h"
#include "io/atomic_file.h"
#include "io/bpe_trainer.h"
#include "io/tokenizer.h"

namespace zs::cli {

int run_tokenizer_train(const TokenizerTrainOptions& o) {
    ZS_CHECK_T(ConfigError, !o.inputs.empty(), "tokenizer train: no --input files");
    std::vector<std::string> texts;
    for (const std::string& f : o.inputs) texts.push_back(io::read_file(f));
    std::vector<std::string_view> views(texts.begin(), texts.end());
    Progress progress("bpe merges", o.vocab_size - 257, "merge", 0.25);
    io::BpeTrainResult r = io::train_byte_level_bpe(
        views, o.vocab_size, [&](int64_t done, int64_t) { progress.update(done); });
    progress.finish();
    std::filesystem::create_directories(o.output);
    const std::string path = o.output + "/tokenizer.json";
    io::write_file_atomic(path, io::to_tokenizer_json(r));
    // Check what was written loads and round-trips.
    io::Tokenizer tok = io::Tokenizer::load(path);
    std::string sample = texts.front().substr(0, 2000);
    ZS_CHECK(tok.decode(tok.encode(sample)) == sample,
             "tokenizer train: the written tokenizer does not round-trip");
    std::printf(
        "wrote %s: %d tokens (%zu merges), <|endoftext|> = %d; %.2f bytes/token on the first "
        "input\n",
        path.c_str(), tok.vocab_size(), r.merges.size(), r.eos_id,
        static_cast<double>(texts.front().size()) /
            static_cast<double>(tok.encode(texts.front()).size()));
    return 0;
}

}  // namespace zs::cli
