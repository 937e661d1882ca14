# cpp-httplib's pkg-config file names OpenSSL only under Requires.private, yet
# with CPPHTTPLIB_OPENSSL_SUPPORT (in Debian's Cflags) its header calls OpenSSL
# itself (Debian 13's 0.18 does: OPENSSL_thread_stop), so a program linking
# only -lcpp-httplib fails there ("DSO missing from command line").
# idempotency_httplib_link(PREFIX): adds OpenSSL to PkgConfig::PREFIX when so.
macro(idempotency_httplib_link prefix)
  if(TARGET PkgConfig::${prefix} AND "-DCPPHTTPLIB_OPENSSL_SUPPORT" IN_LIST ${prefix}_CFLAGS_OTHER)
    find_package(OpenSSL QUIET)
    if(OpenSSL_FOUND)
      set_property(TARGET PkgConfig::${prefix} APPEND PROPERTY INTERFACE_LINK_LIBRARIES OpenSSL::SSL OpenSSL::Crypto)
    endif()
  endif()
endmacro()
