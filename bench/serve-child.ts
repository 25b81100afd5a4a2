// `slicec serve` from the sources in a process of its own: the server the load benchmarks
// (load.ts, adaptive.ts) start for each configuration, through the real CLI.
import { main } from '../compiler/cli.js';

process.exitCode = await main(process.argv.slice(2));
