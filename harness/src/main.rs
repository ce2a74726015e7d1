fn main() { eprintln!("usage: harness SCENARIO.toml (not implemented yet)"); std::process::exit(2); }
