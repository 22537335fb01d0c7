"""Data drift: is a folder of images from the training distribution?"""
