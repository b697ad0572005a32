"""GPU-side steps of the engine as torch ops on the device (torch is imported only by the
submodules, and only a GPU path imports them: `import cvmatte` stays torch-free)."""
