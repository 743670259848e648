// Greedy generation from token ids with llama.cpp's library, for scripts/peer_llamacpp.sh: the
// tokens to compare with kvserve's (llama-bench measures the rates; it never shows tokens).
//
//   peer_llamacpp_greedy MODEL.gguf N_NEW THREADS ID...
//
// prints `ids: <generated ids>` and `decode_tokens_per_s: <tokens after the first over their time>`.
#include "llama.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

int main(int argc, char ** argv) {
    if (argc < 5) {
        std::fprintf(stderr, "usage: %s MODEL.gguf N_NEW THREADS ID...\n", argv[0]);
        return 2;
    }
    const int n_new = std::atoi(argv[2]);
    const int threads = std::atoi(argv[3]);
    std::vector<llama_token> prompt;
    for (int i = 4; i < argc; i++) prompt.push_back(std::atoi(argv[i]));

    llama_backend_init();
    llama_model_params mp = llama_model_default_params();
    llama_model * model = llama_model_load_from_file(argv[1], mp);
    if (!model) { std::fprintf(stderr, "cannot load %s\n", argv[1]); return 1; }
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = prompt.size() + n_new + 8;
    cp.n_batch = cp.n_ctx;
    cp.n_threads = threads;
    cp.n_threads_batch = threads;
    llama_context * ctx = llama_init_from_model(model, cp);
    if (!ctx) { std::fprintf(stderr, "cannot make a context\n"); return 1; }
    const int n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));

    std::vector<llama_token> out;
    std::vector<llama_token> step = prompt;
    auto first = std::chrono::steady_clock::now();
    for (int i = 0; i < n_new; i++) {
        if (llama_decode(ctx, llama_batch_get_one(step.data(), step.size())) != 0) {
            std::fprintf(stderr, "decode failed at token %d\n", i);
            return 1;
        }
        const float * logits = llama_get_logits_ith(ctx, -1);
        llama_token best = 0;
        for (llama_token t = 1; t < n_vocab; t++) if (logits[t] > logits[best]) best = t;
        out.push_back(best);
        step.assign(1, best);
        if (i == 0) first = std::chrono::steady_clock::now();
    }
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - first).count();
    std::printf("ids:");
    for (llama_token t : out) std::printf(" %d", t);
    std::printf("\ndecode_tokens_per_s: %.2f\n", n_new > 1 ? (n_new - 1) / secs : 0.0);
    llama_free(ctx);
    llama_model_free(model);
    return 0;
}
