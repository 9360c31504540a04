"""llmfs: the course's grading tool (this folder, grading/llmfs/; its own tests are in grading/tests/).

- `llmfs.course`         reads course.toml, the manifest of milestones.
- `llmfs.loader`         the one loader: imports a milestone's module from an implementation root.
- `llmfs.testing`        what test files use: the fixture that loads the code under test, thresholds.
- `llmfs.pytest_plugin`  markers, points, `--impl-root`, the results stream, one-line stub failures.
- `llmfs.todo`           every stub left in a learner's files, by task: pytest's "still to write".
- `llmfs.untouched`      untouched stubs, told apart cheaply and graded without running their tests.
- `llmfs.stubs`          turns solutions/ into the learner's milestones/ with nbgrader's ClearSolutions.
- `llmfs.grader`         runs each milestone's hidden tests in a limited subprocess.
- `llmfs.report`         the terminal table and Gradescope's results.json.
- `llmfs.fsutil`         atomic writes and readable paths.
- `llmfs.data`           downloads and offline GPT-2 tokenizers; the registry is data/registry.toml.
- `llmfs.jail`, `guard`, `classroom`, `leaderboard`, `shards`, `autograder`, `release`: see ARCHITECTURE.md.
"""

__version__ = "0.1.0"
