// Model I/O tests (being written).
#include <doctest/doctest.h>
