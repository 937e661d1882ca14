# opentelemetry-cpp, optional: the OpenTelemetry adapter's tests and the demo's
# console exporter are built only where it is installed (Debian 13 and later:
# opentelemetry-cpp-dev; Debian 12 has none). Defines IDEMPOTENCY_OPENTELEMETRY
# and the interface target idempotency_opentelemetry_sdk (API, SDK, in-memory
# and ostream exporters).
#
# Its CMake package is used where it can be loaded with only the components we
# need (opentelemetry-cpp 1.20 and later, e.g. Debian sid). Debian 13's 1.19
# package cannot: its config also demands the gRPC, Protobuf and Abseil CMake
# packages; there the headers and libraries are found directly, with the
# compile definitions the libraries were built with (HAVE_ABSEIL: nostd types
# are Abseil's, so libabsl-dev is needed too).
set(IDEMPOTENCY_OPENTELEMETRY OFF)
find_package(opentelemetry-cpp CONFIG QUIET COMPONENTS api sdk exporters_in_memory exporters_ostream)
if(opentelemetry-cpp_FOUND AND TARGET opentelemetry-cpp::in_memory_span_exporter)
  add_library(idempotency_opentelemetry_sdk INTERFACE)
  target_link_libraries(idempotency_opentelemetry_sdk INTERFACE
    opentelemetry-cpp::api opentelemetry-cpp::trace opentelemetry-cpp::metrics
    opentelemetry-cpp::in_memory_span_exporter opentelemetry-cpp::in_memory_metric_exporter
    opentelemetry-cpp::ostream_span_exporter opentelemetry-cpp::ostream_metrics_exporter)
  set(IDEMPOTENCY_OPENTELEMETRY ON)
else()
  find_path(OTEL_CPP_INCLUDE_DIR opentelemetry/version.h)
  set(_otel_libs trace metrics resources common exporter_in_memory exporter_in_memory_metric exporter_ostream_span
    exporter_ostream_metrics)
  set(_otel_paths)
  set(_otel_missing)
  foreach(lib IN LISTS _otel_libs)
    find_library(OTEL_CPP_LIB_${lib} opentelemetry_${lib})
    if(OTEL_CPP_LIB_${lib})
      list(APPEND _otel_paths ${OTEL_CPP_LIB_${lib}})
    else()
      list(APPEND _otel_missing ${lib})
    endif()
  endforeach()
  if(OTEL_CPP_INCLUDE_DIR AND NOT _otel_missing)
    set(_otel_definitions OPENTELEMETRY_ABI_VERSION_NO=1)
    get_filename_component(_otel_libdir ${OTEL_CPP_LIB_trace} DIRECTORY)
    file(GLOB _otel_targets ${_otel_libdir}/cmake/opentelemetry-cpp/opentelemetry-cpp-target.cmake)
    foreach(f IN LISTS _otel_targets)
      file(STRINGS ${f} _otel_abseil REGEX "HAVE_ABSEIL")
      if(_otel_abseil)
        list(APPEND _otel_definitions HAVE_ABSEIL)
      endif()
    endforeach()
    set(_otel_abseil_ok ON)
    if(HAVE_ABSEIL IN_LIST _otel_definitions)
      find_path(ABSL_INCLUDE_DIR absl/types/variant.h)
      # What the API's Abseil types call out of line (its CMake package links these).
      foreach(lib bad_variant_access bad_optional_access base throw_delegate)
        find_library(ABSL_LIB_${lib} absl_${lib})
        if(ABSL_LIB_${lib})
          list(APPEND _otel_paths ${ABSL_LIB_${lib}})
        endif()
      endforeach()
      if(NOT ABSL_INCLUDE_DIR)
        set(_otel_abseil_ok OFF)
        message(STATUS "opentelemetry-cpp was built with Abseil, whose headers are missing (apt-get install libabsl-dev)")
      endif()
    endif()
    if(_otel_abseil_ok)
      add_library(idempotency_opentelemetry_sdk INTERFACE)
      target_include_directories(idempotency_opentelemetry_sdk INTERFACE ${OTEL_CPP_INCLUDE_DIR})
      target_compile_definitions(idempotency_opentelemetry_sdk INTERFACE ${_otel_definitions})
      target_link_libraries(idempotency_opentelemetry_sdk INTERFACE ${_otel_paths} Threads::Threads)
      set(IDEMPOTENCY_OPENTELEMETRY ON)
    endif()
  endif()
endif()
if(IDEMPOTENCY_OPENTELEMETRY)
  message(STATUS "opentelemetry-cpp found: building the OpenTelemetry adapter's tests and the demo's exporter")
else()
  message(STATUS "opentelemetry-cpp not found: the OpenTelemetry adapter's tests are not built and the demo prints no spans (Debian 13 and later: apt-get install opentelemetry-cpp-dev)")
endif()
