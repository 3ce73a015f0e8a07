# zs_add_library(name SOURCES ... DEPS ...): one CMake library per src/ layer.
function(zs_add_library name)
    cmake_parse_arguments(A "" "" "SOURCES;DEPS;PRIVATE_DEPS" ${ARGN})
    add_library(${name} STATIC ${A_SOURCES})
    target_link_libraries(${name} PUBLIC zs_options ${A_DEPS} PRIVATE ${A_PRIVATE_DEPS})
endfunction()

# zs_add_test(name SOURCES ... [DEPS ...] [LABELS unit|e2e|mpi|cuda|lint] [TIMEOUT s] [THREADS n]):
# a GoogleTest binary registered with ctest, with a label and a timeout (every test has one).
function(zs_add_test name)
    cmake_parse_arguments(A "" "TIMEOUT;THREADS" "SOURCES;DEPS;LABELS" ${ARGN})
    if(NOT A_THREADS)
        set(A_THREADS 1)
    endif()
    if(NOT A_LABELS)
        set(A_LABELS unit)
    endif()
    if(NOT A_TIMEOUT)
        set(A_TIMEOUT 300)
    endif()
    add_executable(${name} ${A_SOURCES})
    target_link_libraries(${name} PRIVATE zs_test_main ${A_DEPS})
    add_test(NAME ${name} COMMAND ${name} --gtest_brief=1)
    # ctest runs tests in parallel (-j); one OpenMP thread per test by default keeps the cores
    # from being oversubscribed (spinning OpenMP barriers collapse then). Tests of threaded code
    # paths ask for THREADS 2; PASSIVE waiting keeps them fair when they share the machine.
    set_tests_properties(${name} PROPERTIES LABELS "${A_LABELS}" TIMEOUT ${A_TIMEOUT}
        ENVIRONMENT "OMP_NUM_THREADS=${A_THREADS};OMP_WAIT_POLICY=PASSIVE")
endfunction()

# zs_add_fuzzer(name SOURCE file.cpp LIB library): a libFuzzer target `<name>_fuzz` in bin/ when
# ZS_FUZZ is on (make test-fuzz runs it from tests/fuzz/corpus/<name>); in ordinary builds with
# tests, `<name>_fuzz_replay` runs the same entry point over that corpus (seeds and past crash
# inputs) as a unit test, without libFuzzer.
function(zs_add_fuzzer name)
    cmake_parse_arguments(A "" "SOURCE;LIB" "" ${ARGN})
    if(ZS_FUZZ)
        add_executable(${name}_fuzz ${A_SOURCE})
        target_link_libraries(${name}_fuzz PRIVATE ${A_LIB})
        target_link_options(${name}_fuzz PRIVATE -fsanitize=fuzzer)
        set_target_properties(${name}_fuzz PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/bin)
    endif()
    if(ZS_BUILD_TESTS)
        add_executable(${name}_fuzz_replay ${PROJECT_SOURCE_DIR}/tests/fuzz/replay_main.cpp
            ${A_SOURCE})
        target_link_libraries(${name}_fuzz_replay PRIVATE ${A_LIB})
        add_test(NAME ${name}_fuzz_replay COMMAND ${name}_fuzz_replay
            ${PROJECT_SOURCE_DIR}/tests/fuzz/corpus/${name})
        set_tests_properties(${name}_fuzz_replay PROPERTIES LABELS unit TIMEOUT 120)
    endif()
endfunction()
