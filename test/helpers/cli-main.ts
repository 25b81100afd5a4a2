// `node --import tsx test/helpers/cli-main.ts ARGS`: the CLI from source in a child process, for
// tests that must kill a run (no build of dist/ needed).
import { main } from '../../compiler/cli.js';

process.exitCode = await main(process.argv.slice(2));
