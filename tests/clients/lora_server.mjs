// Starts `lora serve` on a free loopback port and stops it: shared by the client tests and the
// bench. The server prints its bound address on stderr.
import { spawn } from "node:child_process";

// `globalArgs` go before the subcommand (e.g. ["--threads", "1"]).
export async function startServer(bin, args, { timeoutMs = 30000, globalArgs = [] } = {}) {
  const child = spawn(bin, [...globalArgs, "serve", "--host", "127.0.0.1", "--port", "0", ...args], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  // Never outlive the script, whatever ends it.
  process.on("exit", () => child.kill("SIGKILL"));
  let stderr = "";
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("server did not start:\n" + stderr)), timeoutMs);
    child.stderr.on("data", (d) => {
      stderr += d;
      const m = /listening on (http:\/\/[0-9.]+:\d+)/.exec(stderr);
      if (m) { clearTimeout(timer); resolve(m[1]); }
    });
    child.on("exit", (code) => { clearTimeout(timer); reject(new Error(`server exited ${code}:\n${stderr}`)); });
  });
  child.removeAllListeners("exit");
  return {
    url,
    child,
    stderr: () => stderr,
    alive: () => child.exitCode === null && child.signalCode === null,
    stop: () => new Promise((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) return resolve();
      child.on("exit", resolve);
      child.kill("SIGTERM");
    }),
  };
}
