// tests: a private temporary directory removed with everything in it when the test ends.
#pragma once

#include <filesystem>
#include <fstream>
#include <string>

#include <sys/stat.h>

namespace tandem::test {

class temp_dir {
public:
    temp_dir() {
        std::string tmpl = (std::filesystem::temp_directory_path() / "tandem-test-XXXXXX").string();
        path_ = ::mkdtemp(tmpl.data());
    }
    ~temp_dir() {
        std::error_code ec;
        std::filesystem::remove_all(path_, ec);
    }
    temp_dir(const temp_dir&) = delete;
    temp_dir& operator=(const temp_dir&) = delete;

    [[nodiscard]] const std::filesystem::path& path() const { return path_; }
    // Writes a file below the directory and returns its full path.
    std::string write(const std::string& name, const std::string& content, mode_t mode = 0644) const {
        auto p = path_ / name;
        std::ofstream(p) << content;
        ::chmod(p.c_str(), mode);
        return p.string();
    }

private:
    std::filesystem::path path_;
};

}  // namespace tandem::test
