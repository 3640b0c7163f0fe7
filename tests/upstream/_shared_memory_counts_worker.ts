/// <reference lib="deno.worker" />
// A Worker counting on a SharedState's upstream counts (tests/upstream/counts_cases.ts).
import { SharedState, type SharedStateInit } from "../../lib/workers/shared_state.ts";
import { countingWorker } from "./counts_cases.ts";

countingWorker((init) => SharedState.attach(init as SharedStateInit).upstreamCounts());
