include(CMakePackageConfigHelpers)

install(TARGETS fedc EXPORT fedcTargets
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(DIRECTORY include/fedc DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} FILES_MATCHING PATTERN "*.h")
install(FILES src/proto/fedc.proto DESTINATION ${CMAKE_INSTALL_DATADIR}/fedc)
install(EXPORT fedcTargets NAMESPACE fedc:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/fedc)
configure_package_config_file(cmake/fedcConfig.cmake.in ${PROJECT_BINARY_DIR}/fedcConfig.cmake
                              INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/fedc)
write_basic_package_version_file(${PROJECT_BINARY_DIR}/fedcConfigVersion.cmake
                                 COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/fedcConfig.cmake ${PROJECT_BINARY_DIR}/fedcConfigVersion.cmake
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/fedc)
# The .pc file locates the prefix relative to itself.
file(RELATIVE_PATH FEDC_PC_PREFIX_REL "/p/${CMAKE_INSTALL_LIBDIR}/pkgconfig" "/p")
configure_file(cmake/fedc.pc.in ${PROJECT_BINARY_DIR}/fedc.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/fedc.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
