#!/usr/bin/env node
// Entry point of the `slicec` command: runs the compiled CLI (npm's prepare step builds dist/).
import { main } from '../dist/compiler/cli.js';

process.exitCode = await main(process.argv.slice(2));
