// Checkpoint averaging, as fairseq's scripts/average_checkpoints.py: the elementwise mean of the parameters of a
// run's last few checkpoints. The mean of models from the end of a run lies nearer the middle of the valley they
// wander around than any one of them, and often scores better than the last (docs/translate.md has the figures).
//
//   skipgrad-translate train ... --save-every 300 --keep-last 5      keeps checkpoint_<step>.safetensors
//   skipgrad-translate average --run runs/main                       the mean of those five
//   skipgrad-translate eval --checkpoint runs/main/checkpoint_average.safetensors
#pragma once
#include <string>
#include <vector>

namespace translate {

// The step checkpoints `train --keep-last N` keeps in run folder `dir` ("checkpoint_<step>.safetensors"), oldest
// first; none: an empty list.
std::vector<std::string> step_checkpoints(const std::string& dir);

// Removes all but the newest `keep` step checkpoints of `dir`.
void prune_step_checkpoints(const std::string& dir, int keep);

// A fresh run's start in run folder `dir`: an earlier run's checkpoints (its step checkpoints and those of
// `checkpoints` that exist) move, with `log` (its metrics.jsonl), into dir/previous_run/, which replaces the one
// before. A folder without a checkpoint (a run that failed before its first save) leaves previous_run/ as it is:
// it holds the last run worth keeping. The files go through previous_run.tmp/ and are put back on an error, which
// names the file. Returns the number of files moved.
size_t set_aside_earlier_run(const std::string& dir, const std::vector<std::string>& checkpoints,
                             const std::string& log);

// Writes to `out` (atomically) the mean of the model tensors of `inputs`, checkpoints written by `train` for one
// model configuration: floating-point tensors averaged in float64 and stored in their own dtype, others (none in a
// Transformer today) only when equal in every file. The result holds no optimizer state (it is for eval and
// translate, not --resume); its metadata are the first input's config and vocabulary, the last input's step, and
// "averaged_from", the inputs' file names. A file that is not such a checkpoint, a different configuration or
// vocabulary, a missing tensor or a different shape or dtype throws skipgrad::Error naming both files.
void average_checkpoints(const std::vector<std::string>& inputs, const std::string& out);

}  // namespace translate
