# queue: sources and tests of this component (included from the root CMakeLists.txt).
