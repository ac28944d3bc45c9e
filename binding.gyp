{
  "targets": [
    {
      "target_name": "emperor_spawn",
      "sources": ["native/spawn.c"],
      "cflags_c": ["-std=gnu11", "-Wall", "-Wextra", "-Werror"]
    }
  ]
}
