# zs_add_library(name SOURCES ... DEPS ...): one CMake library per src/ layer.
function(zs_add_library name)
    cmake_parse_arguments(A "" "" "SOURCES;DEPS;PRIVATE_DEPS" ${ARGN})
    add_library(${name} STATIC ${A_SOURCES})
    target_link_libraries(${name} PUBLIC zs_options ${A_DEPS} PRIVATE ${A_PRIVATE_DEPS})
endfunction()

# zs_add_test(name SOURCES ... [DEPS ...] [LABELS unit|e2e|mpi|cuda|lint] [TIMEOUT s]):
# a GoogleTest binary registered with ctest, with a label and a timeout (every test has one).
function(zs_add_test name)
    cmake_parse_arguments(A "" "TIMEOUT" "SOURCES;DEPS;LABELS" ${ARGN})
    if(NOT A_LABELS)
        set(A_LABELS unit)
    endif()
    if(NOT A_TIMEOUT)
        set(A_TIMEOUT 300)
    endif()
    add_executable(${name} ${A_SOURCES})
    target_link_libraries(${name} PRIVATE zs_test_main ${A_DEPS})
    add_test(NAME ${name} COMMAND ${name} --gtest_brief=1)
    set_tests_properties(${name} PROPERTIES LABELS "${A_LABELS}" TIMEOUT ${A_TIMEOUT}
        ENVIRONMENT "OMP_NUM_THREADS=2")
endfunction()
