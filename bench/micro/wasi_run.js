// Runs a bench built for wasm32-wasip1 in Node's V8 (WASI preview1), to see the
// filter's code under the engine Envoy uses, without Envoy:
//
//   cargo bench --bench schema_validate --target wasm32-wasip1 --no-run
//   node bench/micro/wasi_run.js target/wasm32-wasip1/release/deps/schema_validate-*.wasm
//
// The bench links the whole library, so the module imports proxy-wasm's host
// functions (`env`): they are stubs here, and the benches never call them.
const { WASI } = require('wasi');
const fs = require('fs');

const path = process.argv[2];
const wasi = new WASI({ version: 'preview1', args: [path], env: process.env, preopens: {} });
(async () => {
  const module = await WebAssembly.compile(fs.readFileSync(path));
  const imports = wasi.getImportObject();
  imports.env = {};
  // A bench that answers host calls itself (bench/micro/filter.rs) exports each as
  // `bench_host_<name>`; the others never make one.
  const exported = new Set(WebAssembly.Module.exports(module).map((e) => e.name));
  let instance;
  for (const i of WebAssembly.Module.imports(module)) {
    if (i.module === 'env') {
      const own = `bench_host_${i.name}`;
      imports.env[i.name] = exported.has(own)
        ? (...args) => instance.exports[own](...args)
        : () => {
            throw new Error(`host call ${i.name} in a bench`);
          };
    }
  }
  instance = await WebAssembly.instantiate(module, imports);
  // proxy_wasm::main! also exports `_initialize`, which WASI.start refuses.
  const { memory, _start } = instance.exports;
  wasi.start({ exports: { memory, _start } });
})();
