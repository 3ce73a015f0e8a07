// StopFilter: matches stop strings against streamed text. Text generated so far is pushed piece
// by piece; push() returns what may be shown now, holding back any tail that could be the start
// of a stop string so a stop string is never half shown. Every stop string is checked (the
// earliest match in the text wins, as OpenAI and vLLM cut at the first occurrence of any).
//
//   StopFilter f({"\n\n", "END"});
//   bool stopped = false;
//   send(f.push(decoder.push(id), stopped));  // stopped: cut before the match; request ends
//   send(f.flush());                          // at the end when no stop string matched
#pragma once

#include <algorithm>
#include <string>
#include <vector>

namespace zs::infer {

class StopFilter {
public:
    explicit StopFilter(std::vector<std::string> stops) : stops_(std::move(stops)) {
        std::erase_if(stops_, [](const std::string& s) { return s.empty(); });
    }

    // Append text; returns what may be shown now and sets `stopped` when a stop string appears
    // (the returned text then ends right before the earliest match).
    std::string push(const std::string& s, bool& stopped) {
        text_ += s;
        size_t best = std::string::npos;
        for (const std::string& st : stops_) {
            size_t from = shown_ > st.size() ? shown_ - st.size() : 0;
            size_t at = text_.find(st, from);
            if (at != std::string::npos) best = std::min(best, at);
        }
        if (best != std::string::npos) {
            stopped = true;
            return take(best);
        }
        size_t hold = 0;
        for (const std::string& st : stops_) {
            for (size_t k = std::min(st.size() - 1, text_.size()); k > hold; --k) {
                if (text_.compare(text_.size() - k, k, st, 0, k) == 0) {
                    hold = k;
                    break;
                }
            }
        }
        return take(text_.size() - hold);
    }
    // Everything not yet shown (call when generation ended without a stop string).
    std::string flush() { return take(text_.size()); }
    bool empty() const { return stops_.empty(); }

private:
    std::string take(size_t upto) {
        if (upto <= shown_) return {};
        std::string out = text_.substr(shown_, upto - shown_);
        shown_ = upto;
        return out;
    }
    std::vector<std::string> stops_;
    std::string text_;
    size_t shown_ = 0;
};

}  // namespace zs::infer
