//! Entry point: parse the flags, build the config, run, and map the outcome to an exit status
//! (0 success, 1 runtime failure, 2 usage error). Errors print as one line.

use std::process::ExitCode;

use gradcam_stream::cli::Args;
use gradcam_stream::config::{Config, UsageError};
use gradcam_tcmalloc as _; // tcmalloc is this program's allocator (see its build.rs)

fn main() -> ExitCode {
    gradcam_stream::shutdown::install();
    let args = Args::parse_with_defaults();
    let result = Config::from_args(args).and_then(gradcam_stream::run);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // A URL's password never reaches the terminal, whatever error quoted it.
            eprintln!("{}", gradcam_stream::redact::line(&format!("error: {e:#}")));
            if e.is::<UsageError>() {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}
