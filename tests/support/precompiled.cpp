// The translation unit that precompiles the headers every test executable shares (see
// tests/CMakeLists.txt); it has no code of its own.
