// What a user's run folder, files and shell are protected from (the CLI probe of 2026-12-06): a refused command
// changes nothing on disk; a fresh run does not report an earlier run's checkpoint_best as its own; a resumed run
// says which given settings its checkpoint overrides and keeps its batch order; written files are whole or absent;
// a cached vocabulary is not reused for other text; paths reach the shell quoted.
#include <sys/wait.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <fstream>
#include <tuple>

#include "analysis/graph.h"
#include "average.h"
#include "config_json.h"
#include "eval.h"
#include "sweep.h"
#include "test_util.h"
#include "translate_test_util.h"
#include "vocab.h"

using namespace sgtest;
using namespace translate;
namespace fs = std::filesystem;

namespace {

const ScratchDir scratch("skipgrad_cli_safety");  // removed when the test process exits
std::string tiny_corpus() { return write_tiny_corpus(scratch.path() / "corpus", 300); }

TrainOptions tiny_run(const std::string& out, int64_t steps) {
  TrainOptions o = tiny_train_options(tiny_corpus());
  o.max_steps = steps;
  o.out_dir = (scratch.path() / out).string();
  return o;
}

// Exit status and output (stdout and stderr) of one command of `exe`.
std::pair<int, std::string> run(const std::string& exe, const std::string& args) {
  fs::create_directories(scratch.path());  // (made by earlier cases when they run)
  const std::string log = (scratch.path() / "cli.log").string();
  const int status = std::system((exe + " " + args + " > " + shell_quote(log) + " 2>&1").c_str());
  std::ifstream in(log);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, std::string(std::istreambuf_iterator<char>(in), {})};
}

// skipgrad-translate refuses the command line: exit status 2, `message` in its output.
void check_refused(const std::string& args, const std::string& message) {
  const std::pair<int, std::string> r = run(SKIPGRAD_TRANSLATE_EXE, args);
  CHECK(r.first == 2);
  CHECK_MESSAGE(r.second.find(message) != std::string::npos, r.second);
}

size_t lines_of(const std::string& path) {
  std::ifstream in(path);
  size_t n = 0;
  for (std::string line; std::getline(in, line);) n++;
  return n;
}

}  // namespace

TEST_SUITE("reliability") {
  TEST_CASE("a refused train command leaves the earlier run's checkpoints and metrics as they were") {
    TrainOptions o = tiny_run("refused", 4);
    o.save_every = 2;
    o.keep_last = 3;
    train(o);
    const size_t metrics = lines_of(o.out_dir + "/metrics.jsonl");
    REQUIRE(step_checkpoints(o.out_dir).size() == 2);
    TrainOptions bad = o;
    bad.label_smoothing = 1.5;  // checked before the folder is touched, not at the first loss
    CHECK_THROWS_WITH_ALL(train(bad), "--label-smoothing must be in [0, 1), got 1.5");
    CHECK(step_checkpoints(o.out_dir).size() == 2);
    CHECK(lines_of(o.out_dir + "/metrics.jsonl") == metrics);
    const auto cli = run(SKIPGRAD_TRANSLATE_EXE, "train --label-smoothing 1 --out " + shell_quote(o.out_dir));
    CHECK(cli.first == 2);
    CHECK(cli.second.find("--label-smoothing: must be in [0, 1), got 1") != std::string::npos);
    CHECK(step_checkpoints(o.out_dir).size() == 2);
    // a --dyt-alpha-at pattern that one topology's model has no DyT for: compare refuses it before the first trains
    const std::string cmp = (scratch.path() / "compare_dyt").string();
    const std::string compare_args = "compare --topologies pre_ln,post_ln --corpus " + shell_quote(tiny_corpus()) +
                                     " --layers 1 --d-model 16 --heads 2 --ffn 32 --vocab-size 64 --steps 2 --out " +
                                     shell_quote(cmp);
    check_refused(compare_args + " --norm dyt --dyt-alpha-at '*.final_norm=0.2'",
                  "'*.final_norm' matches no DyT of this post_ln model");
    // so is an --lr-scale-at pattern that matches no parameter of one of them; and an entry that is not PATTERN=SCALE
    check_refused(compare_args + " --lr-scale-at 'enc.final_norm.*=2'",
                  "--lr-scale-at: the pattern 'enc.final_norm.*' matches no parameter");
    check_refused(compare_args + " --lr-scale-at '*.alpha'", "'*.alpha' in '*.alpha' is not PATTERN=SCALE");
    // sweep --lrs: numbers > 0, in place of --lr
    const std::string sweep_args = "sweep --topologies pre_ln --depths 1 --corpus " + shell_quote(tiny_corpus()) +
                                   " --steps 2 --out " + shell_quote(cmp);
    check_refused(sweep_args + " --lrs 1e-3,0", "--lrs: '0' in '1e-3,0' is not a number > 0");
    check_refused(sweep_args + " --lrs 1e-3 --lr 2e-3", "--lrs: lists every run's learning rate: give it or --lr");
    CHECK_FALSE(fs::exists(cmp));
  }

  TEST_CASE("a fresh run in an earlier run's folder moves its files to previous_run/; the divergence message is true") {
    TrainOptions o = tiny_run("fresh", 4);
    o.eval_every = 2;
    o.keep_last = 2;
    o.save_every = 2;
    train(o);
    REQUIRE(fs::exists(o.out_dir + "/checkpoint_best.safetensors"));
    const std::string best_bytes = read_file(o.out_dir + "/checkpoint_best.safetensors");
    const std::vector<std::string> steps = step_checkpoints(o.out_dir);
    REQUIRE(steps.size() == 2);
    TrainOptions again = tiny_run("fresh", 2);  // no evaluation: it makes no checkpoint_best of its own
    train(again);
    CHECK_FALSE(fs::exists(o.out_dir + "/checkpoint_best.safetensors"));
    CHECK(step_checkpoints(o.out_dir).empty());  // (again keeps none)
    // nothing of the earlier run is lost: its files sit whole in previous_run/
    const std::string prev = o.out_dir + "/previous_run";
    CHECK(read_file(prev + "/checkpoint_best.safetensors") == best_bytes);
    CHECK(fs::exists(prev + "/checkpoint_last.safetensors"));
    CHECK(fs::exists(prev + "/metrics.jsonl"));
    CHECK(step_checkpoints(prev).size() == 2);
    train(again);  // a third run replaces previous_run/ with the second run's files
    CHECK_FALSE(fs::exists(prev + "/checkpoint_best.safetensors"));
    CHECK(fs::exists(prev + "/checkpoint_last.safetensors"));
    CHECK(step_checkpoints(prev).empty());
    // A run that fails before its first save, then another fresh run (the retry with a lower learning rate): the
    // failed run left no checkpoint, so previous_run/ keeps the last run that had one.
    const std::string third = read_file(o.out_dir + "/checkpoint_last.safetensors");
    TrainOptions failing = tiny_run("fresh", 50);
    failing.lr = 1e30;
    failing.warmup = 0;
    REQUIRE(train(failing).diverged);
    CHECK_FALSE(fs::exists(o.out_dir + "/checkpoint_last.safetensors"));
    CHECK(read_file(prev + "/checkpoint_last.safetensors") == third);
    train(again);
    CHECK(read_file(prev + "/checkpoint_last.safetensors") == third);
    CHECK_FALSE(fs::exists(o.out_dir + "/previous_run.tmp"));
    // A divergence right after a save: that checkpoint holds the weights the diverged step started from.
    const auto diverged = run(SKIPGRAD_TRANSLATE_EXE,
                              "train --corpus " + shell_quote(tiny_corpus()) + " --vocab-size 64 --layers 1"
                              " --d-model 16 --heads 2 --ffn 32 --max-tokens 192 --quiet --eval-every 0 --beam 1"
                              " --test-sentences 2 --save-every 1 --steps 50 --lr 1e30 --warmup 0 --out " +
                                  shell_quote((scratch.path() / "fresh_diverge").string()));
    INFO(diverged.second);
    CHECK(diverged.first == 3);
    CHECK(diverged.second.find("diverged at step 2") != std::string::npos);
    CHECK(diverged.second.find("checkpoint_last.safetensors (step 1) is kept, but its weights are the ones the "
                               "diverged step started from") != std::string::npos);
  }

  TEST_CASE("--resume keeps its checkpoint's seed for the batch order, and says which given settings it does not use") {
    const std::string whole = (scratch.path() / "seed_whole").string(), part = (scratch.path() / "seed_part").string();
    const std::string args = "train --corpus " + shell_quote(tiny_corpus()) +
                             " --vocab-size 64 --layers 1 --d-model 16 --heads 2 --ffn 32 --max-tokens 192 --lr 3e-3"
                             " --warmup 5 --quiet --eval-every 0 --save-every 0 --eval-sentences 2 --test-sentences 2"
                             " --beam 1 --seed 5";
    REQUIRE(run(SKIPGRAD_TRANSLATE_EXE, args + " --steps 6 --out " + shell_quote(whole)).first == 0);
    REQUIRE(run(SKIPGRAD_TRANSLATE_EXE, args + " --steps 3 --out " + shell_quote(part)).first == 0);
    // resumed with another seed: the batch order stays seed 5's, so the run ends where the whole one does
    const auto resumed = run(SKIPGRAD_TRANSLATE_EXE,
                             args + " --steps 6 --resume --seed 9 --weight-decay 0.5 --out " + shell_quote(part));
    INFO(resumed.second);
    CHECK(resumed.first == 0);
    CHECK(resumed.second.find("--resume: --seed 9 is not used: the run continues with its checkpoint's 5") !=
          std::string::npos);
    CHECK(resumed.second.find("--resume: --weight-decay 0.5 is not used") != std::string::npos);
    const nn::SafetensorsFile a = nn::load_safetensors(whole + "/checkpoint_last.safetensors");
    const nn::SafetensorsFile b = nn::load_safetensors(part + "/checkpoint_last.safetensors");
    CHECK(b.metadata.at("seed") == "5");
    CHECK(max_abs_diff(a.find("embed.weight"), b.find("embed.weight")) == 0);
    // a checkpoint written before the "seed" entry: the seed comes from its generator's (skipgrad.rng.seed)
    const std::string old = (scratch.path() / "seed_old").string();
    REQUIRE(run(SKIPGRAD_TRANSLATE_EXE, args + " --steps 3 --out " + shell_quote(old)).first == 0);
    nn::SafetensorsFile f = nn::load_safetensors(old + "/checkpoint_last.safetensors");
    f.metadata.erase("seed");
    nn::save_safetensors(old + "/checkpoint_last.safetensors", f.tensors, f.metadata);
    const auto older = run(SKIPGRAD_TRANSLATE_EXE, args + " --steps 6 --resume --seed 9 --out " + shell_quote(old));
    CHECK(older.second.find("--seed 9 is not used: the run continues with its checkpoint's 5") != std::string::npos);
    const nn::SafetensorsFile c = nn::load_safetensors(old + "/checkpoint_last.safetensors");
    CHECK(max_abs_diff(a.find("embed.weight"), c.find("embed.weight")) == 0);
    // no --seed on the command line: nothing is said of the default it would have been
    const std::string no_seed = args.substr(0, args.rfind(" --seed 5"));
    const auto quiet = run(SKIPGRAD_TRANSLATE_EXE, no_seed + " --steps 7 --resume --out " + shell_quote(old));
    CHECK(quiet.first == 0);
    CHECK(quiet.second.find("--seed") == std::string::npos);
  }

  TEST_CASE("--resume after the corpus changed is refused and leaves the cached vocabulary as it was") {
    const fs::path corpus = scratch.path() / "changing";
    fs::create_directories(corpus);
    for (const char* split : {"train.tsv", "valid.tsv", "test.tsv"})
      fs::copy_file(fs::path(tiny_corpus()) / split, corpus / split, fs::copy_options::overwrite_existing);
    TrainOptions o = tiny_run("changing_run", 2);
    o.corpus = corpus.string();
    train(o);
    const std::string model = read_file((corpus / "spm64.model").string());
    { std::ofstream(corpus / "train.tsv", std::ios::app) << "zwei und zwanzig\ttwenty-two\n"; }
    o.resume = true;
    o.max_steps = 4;
    CHECK_THROWS_WITH_ALL(train(o), "--resume", "the training text or --vocab-size is not what the run in",
                          "checkpoint: fnv1a64 ");
    CHECK(read_file((corpus / "spm64.model").string()) == model);
    // a vocabulary cached before fingerprints were kept (no .source) is used, and gets one
    fs::remove(corpus / "spm64.model.source");
    o.resume = false;
    o.out_dir += "_fresh";
    train(o);
    CHECK(fs::exists(corpus / "spm64.model.source"));
    CHECK(read_file((corpus / "spm64.model").string()) == model);
  }

  TEST_CASE("checkpoint_best weighs the validation at the end of training as well; --eval-sentences 0 is all") {
    TrainOptions o = tiny_run("best_at_end", 5);  // evaluations at steps 2 and 4, then the end's at step 5
    o.eval_every = 2;
    const TrainResult r = train(o);
    std::ifstream in(o.out_dir + "/metrics.jsonl");
    std::vector<std::pair<double, std::string>> evaluations;  // (valid loss printed to 6 digits, step)
    for (std::string line; std::getline(in, line);) {
      const nlohmann::json j = nlohmann::json::parse(line);
      if (j.contains("valid_loss")) evaluations.emplace_back(j["valid_loss"].get<double>(), j["step"].dump());
    }
    REQUIRE(evaluations.size() == 3);
    CHECK(evaluations.back().second == "5");  // the end's validation is a metrics line as well
    const auto best = std::min_element(evaluations.begin(), evaluations.end(),
                                       [](const auto& a, const auto& b) { return a.first < b.first; });
    const nn::Metadata best_file = nn::load_safetensors(o.out_dir + "/checkpoint_best.safetensors").metadata;
    const nn::Metadata last = nn::load_safetensors(o.out_dir + "/checkpoint_last.safetensors").metadata;
    CHECK(last.at("step") == "5");
    CHECK(metadata_number(last, "best_valid_loss", "last") == r.best_valid_loss);  // the end's validation counted
    CHECK(r.best_valid_loss == doctest::Approx(best->first).epsilon(1e-5));
    bool tie = false;  // two losses the 6 printed digits cannot order
    for (const auto& e : evaluations) tie |= &e != &*best && std::abs(e.first - best->first) <= 1e-5 * best->first;
    if (!tie) CHECK(best_file.at("step") == best->second);
    // --eval-sentences 0 decodes every validation sentence
    const auto all = run(SKIPGRAD_TRANSLATE_EXE, "train --corpus " + shell_quote(tiny_corpus()) + " --vocab-size 64"
                         " --layers 1 --d-model 16 --heads 2 --ffn 32 --max-tokens 192 --steps 1 --eval-every 1"
                         " --eval-sentences 0 --save-every 0 --beam 1 --test-sentences 2 --out " +
                         shell_quote((scratch.path() / "eval_all").string()));
    INFO(all.second);
    CHECK(all.first == 0);
    const std::string valid_lines = std::to_string(lines_of(tiny_corpus() + "/valid.tsv"));
    CHECK(all.second.find("valid BLEU (greedy, " + valid_lines + " sentences)") != std::string::npos);
  }

  TEST_CASE("a fresh run refused for its metrics.jsonl, or stopped before its first save, leaves no earlier file") {
    TrainOptions o = tiny_run("metrics_refused", 4);
    o.save_every = 2;
    o.keep_last = 2;
    o.eval_every = 2;
    train(o);
    fs::remove(o.out_dir + "/metrics.jsonl");
    fs::create_directories(o.out_dir + "/metrics.jsonl");  // a folder in its place: refused before any removal
    CHECK_THROWS_WITH_ALL(train(o), "metrics.jsonl", "is a folder");
    CHECK(step_checkpoints(o.out_dir).size() == 2);
    CHECK(fs::exists(o.out_dir + "/checkpoint_best.safetensors"));
    CHECK(fs::exists(o.out_dir + "/checkpoint_last.safetensors"));
    fs::remove(o.out_dir + "/metrics.jsonl");
    TrainOptions d = o;  // diverges at step 2, before a save: the earlier run's checkpoint_last is not left as its own
    d.save_every = 0;
    d.lr = 1e30;
    d.warmup = 0;
    d.model.dropout = d.model.attn_dropout = 0;
    REQUIRE(train(d).diverged);
    CHECK_FALSE(fs::exists(o.out_dir + "/checkpoint_last.safetensors"));
    CHECK_FALSE(fs::exists(o.out_dir + "/checkpoint_best.safetensors"));
  }

  TEST_CASE("--resume with other model options names the options that differ") {
    TrainOptions o = tiny_run("resume_other", 2);
    train(o);
    o.resume = true;
    o.max_steps = 4;
    o.model.enc_layers = o.model.dec_layers = 2;
    CHECK_THROWS_WITH_ALL(train(o), "--resume", "holds another model", "dec_layers 1 vs 2, enc_layers 1 vs 2");
  }

  TEST_CASE("a checkpoint from before 2026-12-06 that gave pre_ln ResiDual's scale (which did nothing) still loads") {
    TrainOptions o = tiny_run("old_options", 2);
    train(o);
    const std::string ckpt = o.out_dir + "/checkpoint_last.safetensors";
    nn::SafetensorsFile f = nn::load_safetensors(ckpt);
    f.metadata.erase("skipgrad.checksum");
    f.metadata.erase("skipgrad.header_checksum");
    auto json = nlohmann::json::parse(f.metadata.at("config"));
    json["resi_dual_scale"] = 0.5;  // what `compare --resi-dual-scale 0.5` saved for every topology
    f.metadata["config"] = json.dump();
    std::string& kind = f.metadata.at("skipgrad.model");
    REQUIRE(kind.find("resi_dual_scale 1,") != std::string::npos);
    kind.replace(kind.find("resi_dual_scale 1,"), 18, "resi_dual_scale 0.5,");
    nn::save_safetensors(ckpt, f.tensors, f.metadata);
    EvalOptions e;
    e.checkpoint = ckpt;
    e.data = o;
    e.beam = 1;
    e.test_sentences = 2;
    CHECK(evaluate_checkpoint(e).sentences == 2);
    TrainOptions resumed = o;  // the resumed run's config comparison reads the same
    resumed.resume = true;
    resumed.max_steps = 3;
    CHECK_NOTHROW(train(resumed));
  }

  TEST_CASE("eval: a corpus folder needs only test.tsv; an unwritable --hypotheses fails before decoding") {
    TrainOptions o = tiny_run("eval_model", 2);
    train(o);
    const fs::path only = scratch.path() / "only_test";
    fs::create_directories(only);
    fs::copy_file(fs::path(o.corpus) / "test.tsv", only / "test.tsv", fs::copy_options::overwrite_existing);
    EvalOptions e;
    e.checkpoint = o.out_dir + "/checkpoint_last.safetensors";
    e.data = o;
    e.data.corpus = only.string();
    e.beam = 1;
    e.test_sentences = 3;
    CHECK(evaluate_checkpoint(e).sentences == 3);
    e.hypotheses_path = (scratch.path() / "no_such_folder" / "hyps.txt").string();
    CHECK_THROWS_WITH_ALL(evaluate_checkpoint(e), "eval --hypotheses", "cannot create", "writable");
    e.hypotheses_path = scratch.path().string();  // a folder
    CHECK_THROWS_WITH_ALL(evaluate_checkpoint(e), "is a folder");
    // /dev/stdout redirected to a file (as run() does) is written through, in order: the hypotheses, then the
    // lines printed after them; /dev/stdout itself is left as it was (a rename once put a file in its place)
    e.hypotheses_path = (scratch.path() / "hyps.txt").string();
    evaluate_checkpoint(e);
    const std::string hyps = read_file(e.hypotheses_path);
    REQUIRE(hyps.size() > 3);
    const bool stdout_was_link = fs::is_symlink("/dev/stdout");
    const auto out = run(SKIPGRAD_TRANSLATE_EXE, "eval --checkpoint " + shell_quote(e.checkpoint) + " --corpus " +
                                                     shell_quote(only.string()) + " --beam 1 --test-sentences 3"
                                                     " --hypotheses /dev/stdout");
    INFO(out.second);
    CHECK(out.first == 0);
    const size_t at = out.second.find(hyps);
    CHECK(at != std::string::npos);
    CHECK(out.second.find("hypotheses: /dev/stdout", at == std::string::npos ? 0 : at) != std::string::npos);
    CHECK(fs::is_symlink("/dev/stdout") == stdout_was_link);
    // the same by another name (a link to /dev/stdout, "/dev//stdout"): the file is told by what it is, not its name
    const fs::path to_stdout = scratch.path() / "to_stdout";
    fs::create_symlink("/dev/stdout", to_stdout);
    const std::string eval = "eval --checkpoint " + shell_quote(e.checkpoint) + " --corpus " +
                             shell_quote(only.string()) + " --beam 1 --test-sentences 3 --hypotheses ";
    for (const std::string& name : {to_stdout.string(), std::string("/dev//stdout")}) {
      const auto other = run(SKIPGRAD_TRANSLATE_EXE, eval + shell_quote(name));
      INFO(name << ": " << other.second);
      CHECK(other.second.find(hyps) != std::string::npos);
      CHECK(other.second.find("BLEU|nrefs:1") != std::string::npos);
    }
    // a descriptor the shell opened for appending (3>>file) is appended to, not replaced
    const std::string appended = (scratch.path() / "appended.txt").string();
    write_file_atomic(appended, "earlier line\n");
    CHECK(std::system((std::string(SKIPGRAD_TRANSLATE_EXE) + " " + eval + "/dev/fd/3 3>>" + shell_quote(appended) +
                       " > /dev/null 2>&1").c_str()) == 0);
    CHECK(read_file(appended) == "earlier line\n" + hyps);
    CHECK(fs::is_symlink("/dev/stdout") == stdout_was_link);
  }

  TEST_CASE("average refuses to overwrite an input; a vocabulary path spelled another way is the same vocabulary") {
    TrainOptions o = tiny_run("avg", 4);
    o.save_every = 2;
    o.keep_last = 2;
    train(o);
    std::vector<std::string> in = step_checkpoints(o.out_dir);
    REQUIRE(in.size() == 2);
    CHECK_THROWS_WITH_ALL(average_checkpoints(in, in[1]), "is one of the inputs");
    // The same run resumed with --data-dir spelled './x' stores another path but the same vocabulary model.
    nn::SafetensorsFile f = nn::load_safetensors(in[1]);
    f.metadata["vocab"] = "./" + f.metadata["vocab"];
    const std::string respelled = o.out_dir + "/respelled.safetensors";
    nn::save_safetensors(respelled, f.tensors, f.metadata);
    average_checkpoints({in[0], respelled}, o.out_dir + "/average.safetensors");
    CHECK(fs::exists(o.out_dir + "/average.safetensors"));
  }

  TEST_CASE("sweep: a result.json of another run, or one that is not JSON, is refused with what to do") {
    SweepOptions s;
    s.train = tiny_run("sweep", 1);
    s.out_dir = (scratch.path() / "sweep").string();
    s.topologies = {"pre_ln"};
    s.depths = {1};
    s.seeds = {1};
    fs::create_directories(s.out_dir + "/pre_ln_L1_s1");
    write_sweep_row(s.out_dir + "/pre_ln_L1_s1/result.json", {"rezero", 1, 1, 1, 0, 0, 0, 0, false, "sinusoidal", ""});
    CHECK_THROWS_WITH_ALL(run_sweep(s), "holds the result of rezero_L1_s1, not of pre_ln_L1_s1", "delete it");
    write_file_atomic(s.out_dir + "/pre_ln_L1_s1/result.json", "{\"topology\": ");
    CHECK_THROWS_WITH_ALL(run_sweep(s), "is not a sweep result", "delete it to train that run again", "--force");
  }

  TEST_CASE("a cached vocabulary is trained again when the corpus it was made from changed") {
    const std::string model = (scratch.path() / "vocab" / "spm40.model").string();
    fs::create_directories(fs::path(model).parent_path());
    const std::vector<Pair> first = {{"eins zwei drei", "one two three"}, {"vier fünf", "four five"}};
    const std::vector<Pair> second = {{"ένα δύο τρία", "one two three"}, {"τέσσερα πέντε", "four five"}};
    const Vocab a = Vocab::load_or_train(model, first, 40);
    const Vocab same = Vocab::load_or_train(model, first, 40);
    CHECK(same.to_base64() == a.to_base64());
    const Vocab b = Vocab::load_or_train(model, second, 40);
    CHECK(b.to_base64() != a.to_base64());
    CHECK(b.encode("ένα").front() != Vocab::kUnk);
    // a piece of the cached model changed (SentencePiece would load it): the record's hash sends it to training
    std::string bytes = read_file(model);
    const size_t at = bytes.find("τέσσερα") != std::string::npos ? bytes.find("τέσσερα") : bytes.find("▁");
    REQUIRE(at != std::string::npos);
    bytes[at + 2] ^= 1;
    write_file_atomic(model, bytes);
    const Vocab mended = Vocab::load_or_train(model, second, 40);
    CHECK(mended.to_base64() == b.to_base64());
    CHECK(read_file(model) != bytes);
    // a record from before the hash (one line) is still taken as it is
    write_file_atomic(model + ".source", Vocab::fingerprint(second, 40) + "\n");
    CHECK(Vocab::load_or_train(model, second, 40).to_base64() == b.to_base64());
  }

  TEST_CASE("write_file_atomic: a folder is refused, a device written in place, a symlink's target replaced") {
    fs::create_directories(scratch.path());  // (made by earlier cases when they run)
    CHECK_THROWS_WITH_ALL(write_file_atomic(scratch.path().string(), "x"), "is a folder");
    write_file_atomic("/dev/null", "x");  // (/dev/stdout, a pipe: written, not renamed over)
    CHECK(fs::is_character_file("/dev/null"));
    CHECK_THROWS_WITH_ALL(write_file_atomic("/dev/full", "x"), "writing '/dev/full' failed");
    const fs::path target = scratch.path() / "target.txt", link = scratch.path() / "link.txt";
    write_file_atomic(target.string(), "old");
    fs::create_symlink(target, link);
    write_file_atomic(link.string(), "new");
    CHECK(fs::is_symlink(link));
    CHECK(read_file(target.string()) == "new");
    check_writable("test", link.string());
    const fs::path dangling = scratch.path() / "dangling.txt";  // a link to a file not made yet, relative
    fs::create_symlink("made_later.txt", dangling);
    write_file_atomic(dangling.string(), "made");
    CHECK(fs::is_symlink(dangling));
    const fs::path loop_a = scratch.path() / "loop_a", loop_b = scratch.path() / "loop_b";
    fs::create_symlink(loop_b, loop_a);
    fs::create_symlink(loop_a, loop_b);
    CHECK_THROWS_WITH_ALL(write_file_atomic(loop_a.string(), "x"), "is a loop of symbolic links");
    CHECK(fs::is_symlink(loop_a));
    CHECK(read_file((scratch.path() / "made_later.txt").string()) == "made");
    // a checkpoint through a symlink: the link stays, its target is replaced and keeps its permissions
    nn::save_safetensors(target.string(), {{"w", Tensor::ones({2})}});
    fs::permissions(target, fs::perms::owner_read | fs::perms::owner_write);
    nn::save_safetensors(link.string(), {{"w", Tensor::zeros({2})}});
    CHECK(fs::is_symlink(link));
    CHECK(nn::load_safetensors(target.string()).find("w").to_vector<float>() == std::vector<float>{0, 0});
    CHECK(fs::status(target).permissions() == (fs::perms::owner_read | fs::perms::owner_write));
  }

  TEST_CASE("read_file: a file in one read, a device to its end; a folder or a missing file named with the reason") {
    fs::create_directories(scratch.path());
    const fs::path file = scratch.path() / "read_me.bin";
    const std::string bytes("a\0b\xff\n", 5);
    write_file_atomic(file.string(), bytes);
    CHECK(read_file(file.string()) == bytes);
    CHECK(read_file("/dev/null") == "");  // no size to read up to: read until the end
    CHECK(read_file("/proc/self/status").find("Name:") != std::string::npos);  // its size says 0
    CHECK_THROWS_WITH_ALL(read_file(scratch.path().string(), "my_loader"), "my_loader", "is a directory");
    CHECK_THROWS_WITH_ALL(read_file((scratch.path() / "missing").string(), "my_loader"), "my_loader: cannot open",
                          "No such file or directory");
  }

  TEST_CASE("a result printed to a full disk fails the command (exit 2) instead of exiting 0") {
    fs::create_directories(scratch.path());
    const std::string text = (scratch.path() / "one_line.txt").string(), log = (scratch.path() / "full.log").string();
    write_file_atomic(text, "a small test\n");
    for (const std::string& command :
         {std::string(SKIPGRAD_TRANSLATE_EXE) + " bleu " + shell_quote(text) + " " + shell_quote(text),
          std::string(SKIPGRAD_GRAPH_EXE) + " paths --layers 1"}) {
      INFO(command);
      const int status = std::system((command + " > /dev/full 2> " + shell_quote(log)).c_str());
      REQUIRE(WIFEXITED(status));
      CHECK(WEXITSTATUS(status) == 2);
      CHECK(read_file(log).find("writing the output to stdout failed: No space left on device") != std::string::npos);
      CHECK(std::system((command + " > /dev/null").c_str()) == 0);
    }
  }

  TEST_CASE("skipgrad-graph dumps Admin after its omega profiling pass, as training runs it (not as Post-LN)") {
    std::map<std::string, std::string> said;
    for (const std::string topology : {"admin", "post_ln"}) {
      const auto r = run(SKIPGRAD_GRAPH_EXE, "dump --topology " + topology + " --layers 1 --format text -o " +
                                                 shell_quote((scratch.path() / (topology + ".txt")).string()));
      REQUIRE(r.first == 0);
      REQUIRE(r.second.find("nodes, loss") != std::string::npos);
      said[topology] = r.second.substr(r.second.find("nodes, loss"));  // "nodes, loss 3.18786)"
    }
    CHECK(said["admin"] != said["post_ln"]);  // the same weights from the seed; Admin's ω differ from ones
    CHECK(read_file((scratch.path() / "admin.txt").string()).find("enc.0.ffn_omega param float32[16] |x| 4 ") ==
          std::string::npos);  // ‖ones(16)‖ = 4: not profiled
  }

  TEST_CASE("shell_quote keeps a path one word") {
    const std::string odd = (scratch.path() / "it's; touch INJECTED; '").string();
    fs::create_directories(odd);
    CHECK(std::system(("cd " + shell_quote(odd) + " && touch made").c_str()) == 0);
    CHECK(fs::exists(fs::path(odd) / "made"));
    CHECK_FALSE(fs::exists(scratch.path() / "INJECTED"));
  }

  TEST_CASE("lists on the command line refuse an item given twice; options that need another are refused alone") {
    const char* translate = SKIPGRAD_TRANSLATE_EXE;
    const char* graph = SKIPGRAD_GRAPH_EXE;  // its sizes bounded (a huge --len crashed in the positions table)
    const std::tuple<const char*, std::string, std::string> cases[] = {
        {translate, "sweep --topologies pre_ln,pre_ln", "--topologies: 'pre_ln' is listed twice in 'pre_ln,pre_ln'"},
        {translate, "sweep --depths 3,3", "--depths: '3' is listed twice"},
        {translate, "compare --topologies post_ln,post_ln", "'post_ln' is listed twice"},
        {translate, "compare --topologies ' post_ln , post_ln'", "'post_ln' is listed twice"},  // items trimmed
        {translate, "train --patience 3 --eval-every 0",
         "--patience: acts on the evaluations of --eval-every, which is 0"},
        {translate, "train --steps 5 --profile-step 9", "--profile-step: step 9 is past --steps 5"},
        {translate, "average --checkpoints a b --last 2", "--last requires --run"},
        {translate, "train --steps 99999999999999999999", "'99999999999999999999' is out of range"},
        {translate, "eval --checkpoint x --remove-layers enc.0,enc.0", "--remove-layers: 'enc.0' is listed twice"},
        {translate, "translate --checkpoint x --remove-layers ,", "--remove-layers: no names in ','"},
        {translate, "translate --checkpoint x --sampling --seed 18446744073709551616", "out of range"},
        {translate, "train --topology pre_ln --resi-dual-scale 0.5 --steps 1", "resi_dual_scale 0.5 is ResiDual's"},
        {translate, "compare --topologies pre_ln,post_ln --resi-dual-scale 0.5", "acts on resi_dual"},
        {graph, "paths --len 1152921504606846976", "--len: must be in [1, 65536]"},
        {graph, "paths --layers 99999999999999999999", "--layers"},
        {graph, "dump --seed -5 -o x.json", "--seed: must be a whole number"},
        {graph, "dump --format json --depth 1 -o x.json", "--depth draws the DOT picture"},
    };
    for (const auto& c : cases) {  // (not a structured binding: clang 14 cannot capture one in INFO's lambda)
      const std::pair<int, std::string> result = run(std::get<0>(c), std::get<1>(c));
      INFO(std::get<1>(c) << " -> exit " << result.first << ": " << result.second);
      CHECK(result.first == 2);
      CHECK(result.second.find(std::get<2>(c)) != std::string::npos);
    }
    CHECK_THROWS_WITH_ALL(nn::SinusoidalPositions(16, int64_t(1) << 60, 1), "SinusoidalPositions", "too large");
  }
}
