//! `api-guard-openapi SPEC [--overlay FILE] [--base-path PATH] [--additional-query allow|deny]
//! [--json-only] [--quiet]`:
//! prints the api-guard configuration for an OpenAPI document on standard output,
//! and nothing else there. Warnings (what the filter cannot check) go to standard
//! error; an error exits with status 1 and names the place in the document as a
//! JSON Pointer. `make -s openapi SPEC=... [OVERLAY=...]` runs it.

use api_guard_openapi::{import, load, pretty, Options};
use std::io::Write as _;
use std::process::ExitCode;

const USAGE: &str = "usage: api-guard-openapi SPEC [--overlay FILE] [--base-path PATH] [--additional-query allow|deny] [--json-only] [--quiet]
  SPEC                 an OpenAPI 3.0 or 3.1 document, JSON or YAML (- for standard input)
  --overlay FILE       root x-api-guard fields (providers, audit, ...) and `operations`, JSON or YAML
  --base-path PATH     put every template behind PATH instead of the first server URL's path (/ for none)
  --additional-query   allow: undeclared query parameters pass (default deny)
  --json-only          an operation taking JSON and other bodies: check JSON, refuse the others (415)
  --quiet              no warnings on standard error";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut spec = None;
    let mut overlay = None;
    let mut options = Options::default();
    let mut quiet = false;
    let mut i = 0;
    while let Some(arg) = args.get(i) {
        let value = args.get(i + 1);
        match (arg.as_str(), value) {
            ("--overlay", Some(v)) => overlay = Some(v.clone()),
            ("--base-path", Some(v)) => options.base_path = Some(v.clone()),
            ("--additional-query", Some(v)) if v == "allow" || v == "deny" => {
                options.deny_additional_query = v == "deny";
            }
            ("--json-only", _) => {
                options.json_only = true;
                i += 1;
                continue;
            }
            ("--quiet", _) => {
                quiet = true;
                i += 1;
                continue;
            }
            ("-h" | "--help", _) => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            (a, _) if !a.starts_with("--") && spec.is_none() => {
                spec = Some(a.to_string());
                i += 1;
                continue;
            }
            _ => return usage(&format!("unexpected argument {arg:?}")),
        }
        i += 2;
    }
    let Some(spec) = spec else {
        return usage("no SPEC given");
    };
    let document = match read(&spec) {
        Ok(d) => d,
        Err(e) => return fail(&e),
    };
    let overlay = match overlay.as_deref().map(read).transpose() {
        Ok(o) => o,
        Err(e) => return fail(&e),
    };
    match import(&document, overlay.as_ref(), &options) {
        Ok(out) => {
            if !quiet {
                for w in &out.warnings {
                    eprintln!("warning: {spec}: {w}");
                }
            }
            let mut stdout = std::io::stdout().lock();
            match stdout.write_all(pretty(&out.config).as_bytes()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&format!("cannot write the configuration: {e}")),
            }
        }
        Err(e) => fail(&format!("{spec}: {e}")),
    }
}

/// Reads and parses one input file (`-`: standard input).
fn read(path: &str) -> Result<serde_json::Value, String> {
    let text = if path == "-" {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(path)
    }
    .map_err(|e| format!("{path}: {e}"))?;
    load::parse(&text).map_err(|e| format!("{path}: {e}"))
}

fn fail(message: &str) -> ExitCode {
    eprintln!("api-guard-openapi: {message}");
    ExitCode::from(1)
}

fn usage(message: &str) -> ExitCode {
    eprintln!("api-guard-openapi: {message}\n{USAGE}");
    ExitCode::from(2)
}
