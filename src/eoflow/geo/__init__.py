"""Areas of interest and their UTM tile grids."""
