// `zerospeed data prepare`: tokenize text files into token shards (io/token_dataset.h) in
// parallel, with a progress line. Each input file is one document (an EOS token follows it when
// the tokenizer has one); the last --val-fraction of each file's tokens goes to the validation
// split, so validation text is never trained on.
#include <algorithm>
#include <atomic>

#include <omp.h>

#include "base/error.h"
#include "base/log.h"
#include "base/progress.h"
#include "cli/commands.h"
#include "io/atomic_file.h"
#include "io/token_dataset.h"
#include "io/tokenizer.h"

namespace zs::cli {

int run_data_prepare(const DataPrepareOptions& o) {
    ZS_CHECK_T(ConfigError, !o.inputs.empty(), "data prepare: no --input files");
    ZS_CHECK_T(ConfigError, o.val_fraction >= 0 && o.val_fraction < 1,
               "data prepare: --val-fraction must be in [0, 1), got {}", o.val_fraction);
    io::Tokenizer tok = io::Tokenizer::load(o.tokenizer);
    std::vector<std::string> texts;
    int64_t total_bytes = 0;
    for (const std::string& f : o.inputs) {
        texts.push_back(io::read_file(f));
        total_bytes += static_cast<int64_t>(texts.back().size());
    }
    if (o.threads > 0) omp_set_num_threads(o.threads);
    io::TokenShardWriter writer(o.output, tok.vocab_size(), tok.eos_id().value_or(-1), o.tokenizer);
    Progress progress("tokenize", total_bytes, "B", 0.25);
    std::atomic<int64_t> done{0};
    for (size_t fi = 0; fi < texts.size(); ++fi) {
        const std::string& text = texts[fi];
        // Chunks of ~256 KiB cut at line ends, tokenized in parallel and joined in order. Lines
        // never straddle chunks, so the result equals tokenizing line-aligned pieces serially.
        std::vector<size_t> cuts = {0};
        while (cuts.back() < text.size()) {
            size_t next = std::min(text.size(), cuts.back() + (size_t{1} << 18));
            if (next < text.size()) {
                size_t nl = text.find('\n', next);
                next = nl == std::string::npos ? text.size() : nl + 1;
            }
            cuts.push_back(next);
        }
        const auto n_chunks = static_cast<int64_t>(cuts.size() - 1);
        std::vector<std::vector<int32_t>> parts(static_cast<size_t>(n_chunks));
#pragma omp parallel for schedule(dynamic, 1)
        for (int64_t c = 0; c < n_chunks; ++c) {
            auto a = cuts[static_cast<size_t>(c)], b = cuts[static_cast<size_t>(c) + 1];
            parts[static_cast<size_t>(c)] =
                tok.encode(std::string_view(text).substr(a, b - a), false, false);
            int64_t d = done.fetch_add(static_cast<int64_t>(b - a)) + static_cast<int64_t>(b - a);
            if (omp_get_thread_num() == 0) progress.update(d);
        }
        std::vector<int32_t> ids;
        for (auto& p : parts) ids.insert(ids.end(), p.begin(), p.end());
        if (tok.eos_id()) ids.push_back(*tok.eos_id());
        auto n_val = static_cast<int64_t>(static_cast<double>(ids.size()) * o.val_fraction);
        auto n_train = static_cast<int64_t>(ids.size()) - n_val;
        writer.append("train", ids.data(), n_train);
        writer.append("val", ids.data() + n_train, n_val);
        log_info("{}: {} bytes -> {} tokens ({:.2f} bytes/token)", o.inputs[fi], text.size(),
                 ids.size(),
                 static_cast<double>(text.size()) /
                     static_cast<double>(std::max<size_t>(1, ids.size())));
    }
    writer.finish();
    progress.finish();
    std::printf("wrote %s: %lld train tokens, %lld validation tokens (vocabulary %d)\n",
                o.output.c_str(), static_cast<long long>(writer.tokens("train")),
                static_cast<long long>(writer.tokens("val")), tok.vocab_size());
    return 0;
}

}  // namespace zs::cli
