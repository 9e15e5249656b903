//! The README's client example is `examples/quickstart.rs`, which `cargo test` compiles; this
//! keeps the README's copy from drifting from the file that is compiled.

#[test]
fn the_readme_client_example_is_the_compiled_example() {
    let readme = include_str!("../README.md");
    let example = include_str!("../examples/quickstart.rs");
    // The README shows the file without its two-line `//!` header.
    let body: String = example
        .lines()
        .skip_while(|l| l.starts_with("//!"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(
        readme.contains(&format!("```rust\n{body}```")),
        "README.md's Rust example differs from examples/quickstart.rs:\n{body}"
    );
}
