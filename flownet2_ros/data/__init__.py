"""Datasets (FlyingChairs, ChairsSDHom, FlyingThings3D, Sintel, KITTI, folders), the synthetic generator and augmentation."""
