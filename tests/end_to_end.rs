//! Cross-crate tests: trainer checkpoint -> tools package -> runtime answers.
